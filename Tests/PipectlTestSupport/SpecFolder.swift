import Foundation
import PostgresAdapter

/// A spec written for one test in a folder of its own, with the files it reads beside it.
/// In `body` (everything after `name:`), `BROKERS` and `URL` become the test stack's broker and
/// database addresses.
public struct SpecFolder {
    public let name: String
    public let dir: String
    public var specPath: String { dir + "/\(name).yaml" }

    /// - Throws: when the test stack could not start, or a file cannot be written.
    public init(_ name: String, files: [String: String], body: String) throws {
        let state = try TestStack.require()
        self.name = name
        dir = NSTemporaryDirectory() + "pipectl-it-\(getpid())-\(name)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for (file, text) in files { try write(text, file) }
        let yaml =
            "version: 1\nname: \(name)\n"
            + body
            .replacingOccurrences(of: "BROKERS", with: "\"\(state.kafkaBrokers)\"")
            .replacingOccurrences(of: "URL", with: "\"\(state.databaseURL)\"")
        try yaml.write(toFile: specPath, atomically: true, encoding: .utf8)
    }

    /// Writes (or replaces) `file` in the spec's folder.
    public func write(_ text: String, _ file: String) throws {
        try text.write(toFile: dir + "/" + file, atomically: true, encoding: .utf8)
    }
}

extension SpecFolder {
    /// The rest of a spec after its `topics` for files of `code,qty` lines: schema `stock`
    /// (`code` text and `qty` integer, both NOT NULL), transform `stock_rows` reading `topic`, and
    /// one insert sink per entry of `sinks` (`url` nil: the test stack's database) with batches
    /// of at most 100 rows and 100 ms.
    public static func stockRows(from topic: String, sinks: [(name: String, table: String, url: String?)]) -> String {
        let sinkLines = sinks.map { sink in
            let url = sink.url.map { "\"\($0)\"" } ?? "URL"
            return "  - { name: \(sink.name), type: postgres, from: stock_rows, url: \(url), table: \(sink.table), batch_size: 100, max_delay_ms: 100 }"
        }
        return """
            schemas:
              - name: stock
                columns:
                  - { name: code, type: text, nullable: false }
                  - { name: qty, type: integer, nullable: false }
            transforms:
              - { name: stock_rows, from: \(topic), schema: stock }
            sinks:
            \(sinkLines.joined(separator: "\n"))

            """
    }
}

/// The rows of `sql` on the test stack's database, NULL as `"NULL"`.
public func rows(_ sql: String) throws -> [[String]] {
    try TestStack.connect().query(sql).map { $0.map { $0 ?? "NULL" } }
}
