import Foundation
import PipectlTestSupport
import PipelineCompiler
import PipelineRuntime
import PipelineSpec
import RecordFormats
import XCTest

/// The generated job's record decoder (Python, run without Spark) against pipectl's own
/// `RecordDecoder`, message by message, on a transform that uses every feature: flattening,
/// renames, drops, `null_if`, defaults, casts with each `on_error`, typed fields, a column
/// matched by its normalised name, record ids and source error records. Both must give the same
/// column values or the same stage and reason.
final class SparkJobDecoderParityTests: XCTestCase {
    static let spec = """
        version: 1
        name: parity
        topics:
          - name: web.clicks
            brokers: "127.0.0.1:9"
            fields: { user_id: bigint, at: timestamptz, tags: jsonb }
        schemas:
          - name: click
            columns:
              - { name: id, type: bigserial, primary_key: true }
              - { name: user_id, type: bigint, nullable: false }
              - { name: at, type: timestamptz }
              - { name: page_url, type: text }
              - { name: page_title, type: "varchar(5)" }
              - { name: tags, type: jsonb }
              - { name: qty, type: integer }
              - { name: price, type: "numeric(6,2)" }
              - { name: paid, type: boolean }
              - { name: sold_on, type: date, date_order: dmy }
              - { name: order_date, type: date }
              - { name: note, type: text }
              - { name: day, type: date }
        transforms:
          - name: click_rows
            from: web.clicks
            schema: click
            flatten: "_"
            rename: { cost: price }
            drop: [day]
            null_if: ["n/a", "0", "false"]
            casts:
              page_title: { type: "varchar(5)", on_error: null }
              qty: { type: integer, on_error: default }
              paid: { type: boolean, on_error: default }
            defaults: { qty: "1", paid: "false" }
        sinks:
          - { name: click_db, type: postgres, from: click_rows, url: "postgresql://u@127.0.0.1:9/d", table: clicks }
        """

    static let messages = [
        #"{"_record":"f00d:1","user_id":7,"at":"2024-01-31T12:00:00Z","page":{"url":"http://x/a","title":"Home"},"tags":["a","b"],"qty":"5","cost":"12.50","paid":"yes","sold_on":"03/05/2011","Order Date":"2024-01-31","note":"a\tb\\c"}"#,
        #"{"_record":"f00d:2","user_id":"8","page":{"url":null,"title":"Too long"},"qty":"many","cost":"n/a","paid":"maybe","day":"2024-01-01"}"#,
        #"{"_record":"f00d:3","at":"2024-01-31"}"#,
        #"{"_record":"f00d:4","user_id":"abc"}"#,
        #"{"_record":"f00d:5","user_id":9,"qty":0,"cost":"0","tags":{"k":[1,2]}}"#,
        #"{"_record":"f00d:6","user_id":10,"qty":[1],"paid":true}"#,
        #"{"_record":"f00d:7","user_id":11,"cost":"12345.5"}"#,
        #"{"_record":"f00d:8","user_id":12,"sold_on":"31/12/2011","order_date":"12/31/2011","note":null}"#,
        #"{"_record":"sha256:ab:cd:9","user_id":13,"at":"2024-13-01 00:00"}"#,
        #"{"_record":"no-ordinal","user_id":14}"#,
        #"{"_record":"f00d:10","_error":"wrong number of fields: 3 instead of 14","_line":7,"_raw_b64":"MSwyLDM="}"#,
        #"{"_record":"f00d:11","user_id":15,"page":{"title":"x\u0000y"}}"#,
        #"{"_record":"f00d:12","user_id":" 16 ","qty":"2.0","paid":"0"}"#,
        #"{"_record":"f00d:13","user_id":17,"tags":[1.50,true,null,"é",{"k":2e3}],"paid":false,"note":"false"}"#,
        #"not json"#,
        #"[1,2]"#,
    ]

    func testGeneratedDecoderAgreesWithRecordDecoder() throws {
        let dir = NSTemporaryDirectory() + "pipectl-sparkdecode-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let specPath = dir + "/parity.yaml"
        try Self.spec.write(toFile: specPath, atomically: true, encoding: .utf8)
        let generated = try pipectl(["generate", specPath, "--target", "spark", "--out", dir, "--allow-outside-project"])
        XCTAssertEqual(generated.status, 0, generated.output)
        let jobText = try String(contentsOfFile: dir + "/spark/click_db_job.py", encoding: .utf8)
        XCTAssertTrue(jobText.contains("FROM_JSON_FIELDS = []\n"), "a topic not fed by a CSV is parsed whole")

        // Python: decode every message with the generated job's decoder (no Spark needed).
        try JSONSerialization.data(withJSONObject: Self.messages).write(to: URL(fileURLWithPath: dir + "/messages.json"))
        let script = """
            import base64, json, sys
            sys.path.insert(0, sys.argv[1] + "/spark")
            import click_db_job as job
            out = []
            for m in json.load(open(sys.argv[1] + "/messages.json", encoding="utf-8")):
                fp, ordinal, stage, reason, payload, values = job.decode(m.encode("utf-8"))
                out.append({"fingerprint": fp, "ordinal": ordinal, "stage": stage, "reason": reason,
                            "payload": base64.b64encode(payload).decode() if payload is not None else None,
                            "values": values})
            json.dump(out, open(sys.argv[1] + "/decoded.json", "w", encoding="utf-8"))
            """
        let python3 = try ChildProcess.run("/usr/bin/env", ["python3", "-c", script, dir])
        XCTAssertEqual(python3.status, 0, python3.output)
        let python = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/decoded.json"))) as! [[String: Any]]
        XCTAssertEqual(python.count, Self.messages.count)

        // Swift: the same messages through pipectl's consumer-side decoder.
        let pipeline = try Compiler().compile(SpecParser(environment: [:], allowOutsideProject: true).parse(path: specPath))
        var decoder = RecordDecoder(transform: pipeline.transforms[0])
        var rows = 0
        var rejected = 0
        for (i, message) in Self.messages.enumerated() {
            let p = python[i]
            var out: [UInt8] = []
            let outcome = Array(message.utf8).withUnsafeBytes { decoder.decode($0, into: &out) }
            let label = "message \(i + 1): \(message)"
            switch outcome {
            case .row(let id, _):
                rows += 1
                XCTAssertTrue(p["stage"] is NSNull, "\(label): Python rejected it: \(p["reason"] ?? "")")
                XCTAssertEqual(p["fingerprint"] as? String, id?.fingerprint, label)
                XCTAssertEqual((p["ordinal"] as? NSNumber)?.int64Value, id?.ordinal, label)
                let swiftValues: [String?] = out.split(separator: 0x09, omittingEmptySubsequences: false).map { field in
                    Array(field) == Array("\\N".utf8) ? nil : ValueCaster.unescapeCopy(Array(field))
                }
                let pythonValues: [String?] = (p["values"] as? [Any] ?? []).map { $0 as? String }
                XCTAssertEqual(pythonValues, swiftValues, label)
            case .rejected(let id, let record):
                rejected += 1
                XCTAssertEqual(p["stage"] as? String, record.stage, label)
                if record.stage != "parse" {  // the JSON parsers word their errors differently
                    XCTAssertEqual(p["reason"] as? String, record.reason, label)
                    XCTAssertEqual(p["fingerprint"] as? String, id?.fingerprint, label)
                    XCTAssertEqual((p["ordinal"] as? NSNumber)?.int64Value, id?.ordinal, label)
                }
                XCTAssertEqual(p["payload"] as? String, Data(record.payload).base64EncodedString(), label)
            }
        }
        // The corpus exercises both outcomes.
        XCTAssertGreaterThan(rows, 5)
        XCTAssertGreaterThan(rejected, 4)
    }
}
