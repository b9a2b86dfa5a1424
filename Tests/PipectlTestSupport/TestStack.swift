import Foundation
import LocalStack
import PipelineRuntime
import PostgresAdapter
import XCTest

/// The real broker and PostgreSQL the integration tests run against: one Tansu and one private
/// PostgreSQL per test process, on free ports, in a temporary folder, stopped at exit.
public enum TestStack {
    /// The repository's root folder (this file is Tests/PipectlTestSupport/TestStack.swift).
    public static let repoRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()

    /// The binary under test: `PIPECTL_BIN` when set (a build with its own scratch path), else
    /// `<repo>/.build/debug/pipectl`.
    public static let pipectl: String = {
        if let bin = ProcessInfo.processInfo.environment["PIPECTL_BIN"], !bin.isEmpty { return bin }
        return repoRoot + "/.build/debug/pipectl"
    }()

    // Written once, inside the one-time initializer of `state`; read by the atexit handler after.
    nonisolated(unsafe) public private(set) static var stack: LocalStack?
    // Written once, inside the one-time initializer of `state`; read after it.
    nonisolated(unsafe) static var startError: (any Error)?

    /// The running stack, started on first use (Swift runs the initializer once, thread-safely).
    public static let state: LocalStack.State? = {
        let dir = NSTemporaryDirectory() + "pipectl-it-\(getpid())"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let s = LocalStack(stateDir: dir, projectDir: repoRoot, kafkaPort: freePort(), pgPort: freePort())
        stack = s
        do {
            let state = try s.up(log: { _ in })
            atexit {
                try? TestStack.stack?.down(log: { _ in })
                if let dir = TestStack.stack?.stateDir { try? FileManager.default.removeItem(atPath: dir) }
            }
            return state
        } catch {
            startError = error
            return nil
        }
    }()

    /// The running stack, or a test failure saying why it could not start.
    public static func require() throws -> LocalStack.State {
        guard let state else { throw startError ?? StackError() }
        return state
    }

    /// A TCP port on 127.0.0.1 that nothing listens on now.
    public static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    /// A new connection to the stack's PostgreSQL.
    public static func connect() throws -> PostgresConnection { try PostgresConnection(url: try require().databaseURL) }
}

/// The stack did not start and gave no error of its own.
public struct StackError: Error {}

/// A pipeline written for one test: its own CSV, topic, table and bookkeeping names.
public struct TestPipeline {
    public let name: String
    /// Its own temporary folder: the CSV, the spec and anything the test writes next to them.
    public let dir: String
    public let csvPath: String
    public var partitions = 1
    public var sourceBatch = 100
    public var sinkBatch = 2000
    public var schemaColumns: String = TestPipeline.housingColumns
    /// Extra transform lines, e.g. a `dead_letter:` entry.
    public var transformExtra = ""
    /// Extra sink fields, e.g. `, mode: upsert, key: [code]`.
    public var sinkExtra = ""
    /// Extra source fields, e.g. `, encoding: utf-16le`.
    public var sourceExtra = ""
    /// Extra topic fields, e.g. `, key: [sku]`.
    public var topicExtra = ""

    /// housing.csv's table: an id, the 14 columns and a `created_at` default.
    public static let housingColumns = """
          - { name: id, type: bigserial, primary_key: true }
          - { name: crim, type: double precision }
          - { name: zn, type: double precision }
          - { name: indus, type: double precision }
          - { name: chas, type: integer }
          - { name: nox, type: double precision }
          - { name: rm, type: double precision }
          - { name: age, type: double precision }
          - { name: dis, type: double precision }
          - { name: rad, type: integer }
          - { name: tax, type: integer }
          - { name: ptratio, type: double precision }
          - { name: b, type: double precision }
          - { name: lstat, type: double precision }
          - { name: medv, type: double precision, nullable: false }
          - { name: created_at, type: timestamp, default: current_timestamp }
        """

    /// Writes `csv` to `<dir>/<name>.csv`.
    public init(_ name: String, csv: String) throws {
        self.name = name
        dir = NSTemporaryDirectory() + "pipectl-it-\(getpid())-\(name)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        csvPath = dir + "/\(name).csv"
        try csv.write(toFile: csvPath, atomically: true, encoding: .utf8)
    }

    /// A pipeline with its CSV and its spec written: the one-line form of `init` plus settings plus `write()`.
    public static func written(
        _ name: String, csv: String, partitions: Int = 1, sourceBatch: Int = 100, sinkBatch: Int = 2000,
        schemaColumns: String = housingColumns, transformExtra: String = "", sinkExtra: String = "",
        sourceExtra: String = "", topicExtra: String = ""
    ) throws -> TestPipeline {
        var p = try TestPipeline(name, csv: csv)
        p.partitions = partitions
        p.sourceBatch = sourceBatch
        p.sinkBatch = sinkBatch
        p.schemaColumns = schemaColumns
        p.transformExtra = transformExtra
        p.sinkExtra = sinkExtra
        p.sourceExtra = sourceExtra
        p.topicExtra = topicExtra
        try p.write()
        return p
    }

    /// A keyed product table for the upsert tests: `sku` (the key), `version`, `price`.
    public static let skuVersionPriceColumns = """
          - { name: sku, type: text, primary_key: true }
          - { name: version, type: integer, nullable: false }
          - { name: price, type: "numeric(10,2)", nullable: false }
        """

    public var specPath: String { dir + "/\(name).yaml" }
    public var table: String { name }
    public var topic: String { "\(name)-data" }

    /// Writes the spec to `specPath`, with the stack's broker and database addresses.
    public func write() throws {
        let state = try TestStack.require()
        let columns = schemaColumns.split(separator: "\n").map { "  " + $0 }.joined(separator: "\n")
        let yaml = """
            version: 1
            name: \(name)
            sources:
              - { name: \(name)_csv, type: csv, path: \(name).csv, batch_size: \(sourceBatch)\(sourceExtra) }
            topics:
              - { name: \(topic), from: \(name)_csv, brokers: "\(state.kafkaBrokers)", partitions: \(partitions)\(topicExtra) }
            schemas:
              - name: \(name)
                columns:
            \(columns)
            transforms:
              - name: \(name)_rows
                from: \(topic)
                schema: \(name)
            \(transformExtra)
            sinks:
              - { name: \(name)_db, type: postgres, from: \(name)_rows, url: "\(state.databaseURL)", table: \(table), batch_size: \(sinkBatch), max_delay_ms: 100\(sinkExtra) }

            """
        try yaml.write(toFile: specPath, atomically: true, encoding: .utf8)
    }
}

/// housing.csv's data rows.
public let housingRows: [String] = {
    let text = try! String(contentsOfFile: TestStack.repoRoot + "/data/housing.csv", encoding: .utf8)
    return Array(text.split(separator: "\n").dropFirst().map(String.init))
}()

/// housing.csv's header line.
public let housingHeader = "crim,zn,indus,chas,nox,rm,age,dis,rad,tax,ptratio,b,lstat,medv"

/// A CSV of `count` rows cycling through housing.csv.
public func repeatedHousingCSV(_ count: Int) -> String {
    var lines = [housingHeader]
    lines.reserveCapacity(count + 1)
    for i in 0..<count { lines.append(housingRows[i % housingRows.count]) }
    return lines.joined(separator: "\n") + "\n"
}

extension PostgresConnection {
    /// The first column of the first row as an integer; -1 when there is none or it is not one.
    public func int(_ sql: String) throws -> Int { Int(try query(sql).first?[0] ?? "") ?? -1 }
}
