import Foundation
import PostgresAdapter
import XCTest

/// Polls `condition` every 0.1 s until it holds; past `timeout` seconds the test fails with
/// "timed out waiting for `what`" followed by `details()` (say what was seen instead).
public func waitFor(
    _ what: String, timeout: Double = 60, otherwise details: @autoclosure () -> String = "", file: StaticString = #filePath,
    line: UInt = #line, _ condition: () throws -> Bool
) rethrows {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if try condition() { return }
        usleep(100_000)
    }
    let more = details()
    XCTFail("timed out waiting for \(what)" + (more.isEmpty ? "" : "\n" + more), file: file, line: line)
}

/// The rows in `table`, or -1 when the count cannot be read (the table or the database is gone).
public func rowCount(_ table: String) -> Int {
    (try? TestStack.connect().int("SELECT count(*) FROM \"\(table)\"")) ?? -1
}

/// `table` holds rows 1...`rows` of the repeated housing data (`repeatedHousingCSV`), once each:
/// the row count, the distinct record ids and the tax checksum; with `everyRow`, also each
/// ordinal once, in order, with its line's tax and medv.
public func assertExactTable(_ table: String, rows: Int, everyRow: Bool, file: StaticString = #filePath, line: UInt = #line) throws {
    let db = try TestStack.connect()
    XCTAssertEqual(try db.int("SELECT count(*) FROM \"\(table)\""), rows, "row count", file: file, line: line)
    XCTAssertEqual(try db.int("SELECT count(DISTINCT \"_pipectl_record\") FROM \"\(table)\""), rows, "distinct record ids", file: file, line: line)
    var tax = 0
    for i in 0..<rows { tax += Int(housingRows[i % housingRows.count].split(separator: ",")[9])! }
    XCTAssertEqual(try db.int("SELECT sum(\"tax\") FROM \"\(table)\""), tax, "tax checksum", file: file, line: line)
    guard everyRow else { return }
    // Each ordinal once, with the values of its line.
    let stored = try db.query(
        """
        SELECT "_pipectl_record" & ((1::bigint << 40) - 1), "tax"::text, "medv"::numeric::text FROM "\(table)" ORDER BY 1
        """)
    XCTAssertEqual(stored.map { Int($0[0] ?? "") ?? -1 }, Array(1...max(rows, 1)).prefix(rows).map { $0 }, "ordinals", file: file, line: line)
    for (i, row) in stored.enumerated() {
        let fields = housingRows[i % housingRows.count].split(separator: ",")
        if row[1] != String(fields[9]) || Decimal(string: row[2] ?? "") != Decimal(string: String(fields[13])) {
            XCTFail("row \(i + 1): tax \(row[1] ?? "NULL") medv \(row[2] ?? "NULL"), expected \(fields[9]) \(fields[13])", file: file, line: line)
            break
        }
    }
}
