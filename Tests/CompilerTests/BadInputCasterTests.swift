import PipelineCompiler
import RecordFormats
import XCTest

/// Reasons quote the refused value; control characters in it are escaped, so a NUL cannot cut
/// the stored reason short (libpq parameters are C strings) and `dlq list` stays one line per row.
final class BadInputCasterTests: XCTestCase {
    func reason(_ text: String, _ type: SQLType) -> String? {
        if case .failure(let error) = ValueCaster.cast(text, to: type) { return error.message }
        return nil
    }

    func testControlCharactersInRefusedValuesAreEscaped() {
        XCTAssertEqual(reason("0.1\u{0}", .doublePrecision), #"'0.1\0' is not a valid double precision"#)
        XCTAssertEqual(reason("1\t2", .integer), #"'1\t2' is not a valid integer"#)
        XCTAssertEqual(reason("yes\nno", .boolean), #"'yes\nno' is not a valid boolean"#)
        XCTAssertEqual(reason("2024-01-01\r", .date), #"'2024-01-01\r' is not a valid date (expected YYYY-MM-DD)"#)
        XCTAssertEqual(reason("\u{1B}[31m", .real), #"'\x1B[31m' is not a valid real"#)
        XCTAssertEqual(reason("x\u{7F}", .smallint), #"'x\x7F' is not a valid smallint"#)
        // Printable text, quotes and non-ASCII letters are shown as they are.
        XCTAssertEqual(reason(#"0.1"5"#, .doublePrecision), #"'0.1"5' is not a valid double precision"#)
        XCTAssertEqual(reason("zwölf", .integer), "'zwölf' is not a valid integer")
    }
}
