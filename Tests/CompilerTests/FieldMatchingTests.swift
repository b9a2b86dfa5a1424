import PipelineCompiler
import PipelineSpec
import RecordFormats
import XCTest

/// The one rule for which field fills which column (exact name, else normalised name), checked
/// against the CSV header at compile time; and the upsert rule for topic keys.
final class FieldMatchingTests: XCTestCase {
    /// A spec with one CSV source whose header is `header`, a schema of `columns` (YAML flow
    /// lines) and extra transform / topic / sink fields.
    func spec(columns: [String], transform: String = "", topic: String = "", sink: String = "") -> String {
        """
        version: 1
        name: t
        sources:
          - { name: t_csv, type: csv, path: t.csv }
        topics:
          - { name: t-data, from: t_csv\(topic) }
        schemas:
          - name: s
            columns:
        \(columns.map { "      - \($0)" }.joined(separator: "\n"))
        transforms:
          - { name: t_rows, from: t-data, schema: s\(transform) }
        sinks:
          - { name: t_db, type: postgres, from: t_rows, table: t\(sink) }

        """
    }

    func compile(_ text: String, header: [String]?) throws -> Pipeline {
        let compiler = Compiler(readHeader: { _ in header })
        return try compiler.compile(SpecParser(environment: [:]).parse(text: text, file: "t.yaml"))
    }

    /// Errors and warnings, one line each.
    func diagnostics(_ text: String, header: [String]?) -> [String] {
        do {
            return try compile(text, header: header).warnings.map(\.description)
        } catch let error as DiagnosticError {
            return error.diagnostics.map(\.description)
        } catch {
            return ["unexpected: \(error)"]
        }
    }

    static let header = ["UserId", "Order Date", "Größe", "名前", "select"]

    func testFieldNamesKeepTheHeadersSpelling() {
        XCTAssertEqual(FieldMatching.fieldNames(header: Self.header), ["UserId", "Order Date", "Größe", "名前", "select"])
        XCTAssertEqual(FieldMatching.normalized(header: Self.header), ["userid", "order_date", "gr_e", "column_4", "select"])
        // Empty, repeated and reserved names are the only ones changed.
        XCTAssertEqual(
            FieldMatching.fieldNames(header: ["", "price", "price", "_record", "Price"]),
            ["column_1", "price", "price_2", "_record_2", "Price"])
        XCTAssertEqual(FieldMatching.index(of: "Order Date", in: Self.header, normalized: FieldMatching.normalized(header: Self.header)), 1)
        XCTAssertEqual(FieldMatching.index(of: "order_date", in: Self.header, normalized: FieldMatching.normalized(header: Self.header)), 1)
        XCTAssertNil(FieldMatching.index(of: "order date", in: Self.header, normalized: FieldMatching.normalized(header: Self.header)))
    }

    /// Issue 8, kind 1: columns named exactly as the header is written are filled by those fields.
    func testColumnsSpelledAsTheHeaderAreFilledByThoseFields() throws {
        let text = spec(columns: [
            "{ name: UserId, type: integer, nullable: false }", "{ name: Order Date, type: date }",
            "{ name: Größe, type: text }", "{ name: 名前, type: text }", "{ name: select, type: text }",
        ])
        let p = try compile(text, header: Self.header)
        XCTAssertEqual(p.warnings, [])
        XCTAssertEqual(
            p.transforms[0].bindings.map { "\($0.column.name)<-\($0.key ?? "?")" },
            ["UserId<-UserId", "Order Date<-Order Date", "Größe<-Größe", "名前<-名前", "select<-select"])
    }

    /// The normalised spelling (what `init` writes) still matches; exact wins over normalised.
    func testNormalisedColumnNamesMatchAndExactNamesWin() throws {
        let text = spec(columns: [
            "{ name: userid, type: integer }", "{ name: order_date, type: date }", "{ name: gr_e, type: text }",
            "{ name: column_4, type: text }", "{ name: select, type: text }",
        ])
        let p = try compile(text, header: Self.header)
        XCTAssertEqual(p.transforms[0].bindings.map { $0.key ?? "?" }, ["UserId", "Order Date", "Größe", "名前", "select"])
        // Variant: a header with both `Order Date` and `order_date`: the exact one fills the column.
        let both = try compile(
            spec(columns: ["{ name: order_date, type: date }"], transform: ", on_unknown_field: ignore"),
            header: ["Order Date", "order_date"])
        XCTAssertEqual(both.transforms[0].bindings.map { $0.key ?? "?" }, ["order_date"])
    }

    /// A column no field fills: an error when NOT NULL, a warning otherwise, each naming the
    /// column, the fields and a did-you-mean; leftover fields are one warning.
    func testUnfilledColumnsAndUnknownFieldsAreReported() {
        let text = spec(columns: [
            "{ name: user_id, type: integer, nullable: false }", "{ name: Order Date, type: date }",
            "{ name: size, type: text }", "{ name: 名前, type: text }", "{ name: select, type: text }",
        ])
        XCTAssertEqual(
            diagnostics(text, header: Self.header),
            [
                "t.yaml:10:17: error: no field of t.csv fills column 'user_id' of schema 's', which is not nullable; the fields are UserId, Order Date, Größe, 名前, select (did you mean 'UserId'?)",
                "t.yaml:12:17: warning: no field of t.csv fills column 'size' of schema 's', so it stays NULL; the fields are UserId, Order Date, Größe, 名前, select",
                "t.yaml:16:5: warning: fields 'UserId', 'Größe' of t.csv fill no column of schema 's' and are not loaded (add a column, list them in 'drop', or set on_unknown_field: ignore)",
            ])
        // Database-filled columns and columns with a transform default are not reported.
        let filled = spec(
            columns: [
                "{ name: id, type: bigserial, primary_key: true }", "{ name: UserId, type: integer }",
                "{ name: at, type: timestamptz, default: now() }", "{ name: source, type: text, nullable: false }",
            ],
            transform: ", defaults: { source: crm }, drop: [Order Date, gr_e, 名前, select]")
        XCTAssertEqual(diagnostics(filled, header: Self.header), [])
    }

    /// Kind 2: `on_unknown_field` chooses between silence, a warning and an error.
    func testOnUnknownFieldPolicy() {
        let columns = ["{ name: UserId, type: integer }"]
        XCTAssertEqual(diagnostics(spec(columns: columns, transform: ", on_unknown_field: ignore"), header: ["UserId", "extra"]), [])
        XCTAssertEqual(
            diagnostics(spec(columns: columns), header: ["UserId", "extra"]),
            [
                "t.yaml:12:5: warning: field 'extra' of t.csv fills no column of schema 's' and is not loaded (add a column, list it in 'drop', or set on_unknown_field: ignore)"
            ])
        XCTAssertEqual(
            diagnostics(spec(columns: columns, transform: ", on_unknown_field: error"), header: ["UserId", "extra", "more"]),
            [
                "t.yaml:12:64: error: fields 'extra', 'more' of t.csv fill no column of schema 's' and are not loaded (add a column, list them in 'drop', or set on_unknown_field: ignore)"
            ])
        XCTAssertEqual(
            diagnostics(spec(columns: columns, transform: ", on_unknown_field: warning"), header: ["UserId"]),
            [
                "t.yaml:12:64: error: unknown on_unknown_field 'warning'; one of ignore, warn, error"
            ])
        // Renamed fields are taken; without a readable header nothing is checked until run.
        XCTAssertEqual(diagnostics(spec(columns: columns, transform: ", rename: { Extra Field: UserId }"), header: ["Extra Field"]), [])
        XCTAssertEqual(diagnostics(spec(columns: ["{ name: nobody, type: integer, nullable: false }"]), header: nil), [])
    }

    /// Kind 4: with `mode: upsert` the topic is keyed by the fields filling the sink's key, so
    /// one key's versions stay in one partition; a key that does not determine it is an error.
    func testUpsertKeysTheTopicByTheSinkKey() throws {
        let columns = ["{ name: sku, type: text, primary_key: true }", "{ name: version, type: integer }", "{ name: price, type: numeric }"]
        let upsert = ", mode: upsert, key: [sku]"
        let p = try compile(spec(columns: columns, topic: ", partitions: 3", sink: upsert), header: ["SKU", "version", "price"])
        XCTAssertEqual(p.topics[0].key, ["SKU"])
        XCTAssertEqual(try compile(spec(columns: columns, topic: ", partitions: 3", sink: upsert), header: nil).topics[0].key, ["sku"])
        // An explicit key on the same field, by either spelling, is fine.
        XCTAssertEqual(diagnostics(spec(columns: columns, topic: ", partitions: 3, key: [sku]", sink: upsert), header: ["SKU", "version", "price"]), [])
        XCTAssertEqual(
            diagnostics(spec(columns: columns, topic: ", partitions: 3, key: [_record]", sink: upsert), header: nil),
            [
                "t.yaml:6:55: error: topic 't-data' has 3 partitions and key [_record], which does not determine the key [sku] of upsert sink 't_db': versions of one row could land in different partitions and an older one be written last; key the topic by [sku] or leave its key out"
            ])
        // Variant: a composite upsert key and a topic keyed by a field outside it.
        let two = ["{ name: shop, type: text, primary_key: true }", "{ name: sku, type: text, primary_key: true }", "{ name: price, type: numeric }"]
        XCTAssertEqual(
            diagnostics(spec(columns: two, topic: ", partitions: 2, key: [price]", sink: ", mode: upsert, key: [shop, sku]"), header: nil),
            [
                "t.yaml:6:55: error: topic 't-data' has 2 partitions and key [price], which does not determine the key [shop, sku] of upsert sink 't_db': versions of one row could land in different partitions and an older one be written last; key the topic by [shop, sku] or leave its key out"
            ])
        // A key on part of the upsert key determines it; one partition keeps order anyway.
        XCTAssertEqual(diagnostics(spec(columns: two, topic: ", partitions: 2, key: [shop]", sink: ", mode: upsert, key: [shop, sku]"), header: nil), [])
        XCTAssertEqual(diagnostics(spec(columns: two, topic: ", key: [price]", sink: ", mode: upsert, key: [shop, sku]"), header: nil), [])
    }

    /// Kind 5: a file declared UTF-8 (the default) whose bytes say otherwise is a compile error
    /// at the source's path, naming the file, the encoding and the option.
    func testAnUndeclaredEncodingIsAnErrorAtTheSourcePath() throws {
        let dir = NSTemporaryDirectory() + "pipectl-fm-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let text = spec(columns: ["{ name: id, type: integer }", "{ name: city, type: text }", "{ name: amount, type: integer }"])
        let csv = "id,city,amount\n1,Zürich,10\n2,Köln,20\n"
        try Data([0xFF, 0xFE] + Array(csv.utf16).flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] }).write(to: URL(fileURLWithPath: dir + "/t.csv"))
        func check(_ text: String) -> [String] {
            do {
                _ = try Compiler().compile(SpecParser(environment: [:]).parse(text: text, file: dir + "/t.yaml"))
                return []
            } catch let error as DiagnosticError {
                return error.diagnostics.map { $0.description.replacingOccurrences(of: dir, with: "DIR") }
            } catch { return ["\(error)"] }
        }
        XCTAssertEqual(
            check(text),
            [
                "DIR/t.yaml:4:37: error: source 't_csv': DIR/t.csv does not look like UTF-8 text (it starts with the UTF-16LE byte order mark FF FE); it looks like utf-16le: set 'encoding: utf-16le' on the source"
            ])
        XCTAssertEqual(check(text.replacingOccurrences(of: "path: t.csv", with: "path: t.csv, encoding: utf-16le")), [])
        XCTAssertEqual(
            check(text.replacingOccurrences(of: "path: t.csv", with: "path: t.csv, encoding: utf16")),
            [
                "DIR/t.yaml:4:54: error: unknown encoding 'utf16' for source 't_csv' (did you mean 'utf-8'?); one of utf-8, utf-16le, utf-16be, latin1, windows-1252"
            ])
        // Variant: windows-1252 bytes in the header.
        try Data(Array("id,Gr".utf8) + [0xF6, 0xDF] + Array("e\n1,XL\n".utf8)).write(to: URL(fileURLWithPath: dir + "/t.csv"))
        XCTAssertEqual(
            check(spec(columns: ["{ name: id, type: integer }", "{ name: Größe, type: text }"])),
            [
                "DIR/t.yaml:4:37: error: source 't_csv': DIR/t.csv does not look like UTF-8 text (its first line has the byte 0xF6, which is not UTF-8); it looks like windows-1252: set 'encoding: windows-1252' on the source"
            ])
        let declared = spec(columns: ["{ name: id, type: integer }", "{ name: Größe, type: text }"])
            .replacingOccurrences(of: "path: t.csv", with: "path: t.csv, encoding: windows-1252")
        XCTAssertEqual(check(declared), [])
    }
}
