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

/// The rows of `sql` on the test stack's database, NULL as `"NULL"`.
public func rows(_ sql: String) throws -> [[String]] {
    try TestStack.connect().query(sql).map { $0.map { $0 ?? "NULL" } }
}
