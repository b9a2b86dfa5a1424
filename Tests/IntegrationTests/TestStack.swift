import Foundation
import LocalStack
import PipelineRuntime
import PostgresAdapter
import XCTest

/// The real broker and PostgreSQL the integration tests run against: one Tansu and one private
/// PostgreSQL per test process, on free ports, in a temporary folder, stopped at exit.
enum TestStack {
    static let repoRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()

    /// The binary under test: `PIPECTL_BIN` when set (a build with its own scratch path), else
    /// `<repo>/.build/debug/pipectl`.
    static let pipectl: String = {
        if let bin = ProcessInfo.processInfo.environment["PIPECTL_BIN"], !bin.isEmpty { return bin }
        return repoRoot + "/.build/debug/pipectl"
    }()

    nonisolated(unsafe) static var stack: LocalStack?
    nonisolated(unsafe) static var startError: Error?

    static let state: LocalStack.State? = {
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
    static func require() throws -> LocalStack.State {
        guard let state else { throw startError ?? StackError() }
        return state
    }

    static func freePort() -> Int {
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

    static func connect() throws -> PostgresConnection { try PostgresConnection(url: try require().databaseURL) }
}

struct StackError: Error {}

/// A pipeline written for one test: its own CSV, topic, table and bookkeeping names.
struct TestPipeline {
    let name: String
    let dir: String
    let csvPath: String
    var partitions = 1
    var sourceBatch = 100
    var sinkBatch = 2000
    var schemaColumns: String = TestPipeline.housingColumns
    var transformExtra = ""
    /// Extra sink fields, e.g. `, mode: upsert, key: [code]`.
    var sinkExtra = ""
    /// Extra source fields, e.g. `, encoding: utf-16le`.
    var sourceExtra = ""
    /// Extra topic fields, e.g. `, key: [sku]`.
    var topicExtra = ""

    static let housingColumns = """
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

    init(_ name: String, csv: String) throws {
        self.name = name
        dir = NSTemporaryDirectory() + "pipectl-it-\(getpid())-\(name)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        csvPath = dir + "/\(name).csv"
        try csv.write(toFile: csvPath, atomically: true, encoding: .utf8)
    }

    var specPath: String { dir + "/\(name).yaml" }
    var table: String { name }
    var topic: String { "\(name)-data" }

    func write() throws {
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

/// Runs the pipectl binary; returns its exit status and combined output.
@discardableResult
func pipectl(_ arguments: [String], environment: [String: String] = [:], timeout: Double = 300) throws -> (status: Int32, output: String) {
    let process = try startPipectl(arguments, environment: environment)
    let deadline = Date().addingTimeInterval(timeout)
    while process.process.isRunning, Date() < deadline { usleep(20_000) }
    if process.process.isRunning {
        process.process.terminate()
        XCTFail("pipectl \(arguments.joined(separator: " ")) did not finish in \(timeout) s")
    }
    process.process.waitUntilExit()
    return (process.process.terminationStatus, process.output())
}

final class RunningPipectl {
    let process: Process
    let outputPath: String
    init(process: Process, outputPath: String) {
        self.process = process
        self.outputPath = outputPath
    }
    func output() -> String { (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "" }
    func kill9() {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }
    func wait(timeout: Double) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning, Date() < deadline { usleep(20_000) }
        return !process.isRunning
    }
}

func startPipectl(_ arguments: [String], environment: [String: String] = [:]) throws -> RunningPipectl {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: TestStack.pipectl)
    process.arguments = arguments
    var env = ProcessInfo.processInfo.environment
    env.merge(environment) { _, new in new }
    process.environment = env
    let outputPath = NSTemporaryDirectory() + "pipectl-out-\(UUID().uuidString).log"
    FileManager.default.createFile(atPath: outputPath, contents: nil)
    let handle = FileHandle(forWritingAtPath: outputPath)
    process.standardOutput = handle
    process.standardError = handle
    process.standardInput = FileHandle.nullDevice
    try process.run()
    return RunningPipectl(process: process, outputPath: outputPath)
}

/// housing.csv's data rows.
let housingRows: [String] = {
    let text = try! String(contentsOfFile: TestStack.repoRoot + "/data/housing.csv", encoding: .utf8)
    return Array(text.split(separator: "\n").dropFirst().map(String.init))
}()

let housingHeader = "crim,zn,indus,chas,nox,rm,age,dis,rad,tax,ptratio,b,lstat,medv"

/// A CSV of `count` rows cycling through housing.csv.
func repeatedHousingCSV(_ count: Int) -> String {
    var lines = [housingHeader]
    lines.reserveCapacity(count + 1)
    for i in 0..<count { lines.append(housingRows[i % housingRows.count]) }
    return lines.joined(separator: "\n") + "\n"
}

extension PostgresConnection {
    func int(_ sql: String) throws -> Int { Int(try query(sql).first?[0] ?? "") ?? -1 }
}
