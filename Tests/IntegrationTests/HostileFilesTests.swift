import Foundation
import PipectlTestSupport
import XCTest

/// Paths that are not CSV files, given to every command that reads one: one line naming the
/// path, exit status 1, no `Fatal error` and no backtrace. No broker or database is needed:
/// `run` and `produce` must stop before they create a topic (the brokers below do not exist).
final class HostileFilesTests: XCTestCase {
    var dir = ""

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "pipectl-hostile-files-\(UUID().uuidString)"
        let fm = FileManager.default
        try fm.createDirectory(atPath: dir + "/pipelines", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: dir + "/data/folder.csv", withIntermediateDirectories: true)
        try fm.createSymbolicLink(atPath: dir + "/data/loop_a.csv", withDestinationPath: "loop_b.csv")
        try fm.createSymbolicLink(atPath: dir + "/data/loop_b.csv", withDestinationPath: "loop_a.csv")
        try fm.createSymbolicLink(atPath: dir + "/data/dangling.csv", withDestinationPath: "gone.csv")
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: dir)
    }

    func run(_ arguments: [String]) throws -> BadInputResult {
        try BadInputProcess.run(arguments, in: dir, environment: ["KAFKA_BROKERS": "127.0.0.1:1"], timeout: 30)
    }

    func assertOneError(_ arguments: [String], _ expected: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let result = try run(arguments)
        XCTAssertEqual(result.status, 1, "\(arguments)\n\(result.stdout)\(result.stderr)", file: file, line: line)
        XCTAssertEqual(result.stderrLines, [expected], file: file, line: line)
        XCTAssertEqual(result.stdoutLines, [], file: file, line: line)
        BadInputCorpusTests.assertNoCrash(result, "\(arguments)")
    }

    func writeSpec(csv: String) throws {
        let yaml = """
            version: 1
            name: hostile_files
            sources: [{ name: c, type: csv, path: ../data/\(csv) }]
            topics: [{ name: c-data, from: c, brokers: "127.0.0.1:1" }]
            schemas: [{ name: t, columns: [{ name: a, type: text }] }]
            transforms: [{ name: rows, from: c-data, schema: t }]
            sinks: [{ name: db, type: postgres, from: rows, table: t, url: "postgresql://nobody@127.0.0.1:1/x" }]

            """
        try yaml.write(toFile: dir + "/pipelines/p.yaml", atomically: true, encoding: .utf8)
    }

    /// Once: exit 132, `Fatal error: 'try!' expression unexpectedly raised an error ... Is a directory`.
    func testAFolderGivenAsTheCSV() throws {
        try assertOneError(["infer", "data/folder.csv"], "error: data/folder.csv: is a folder, not a file")
        try assertOneError(["init", "x", "--csv", "data/folder.csv"], "error: data/folder.csv: is a folder, not a file")
        try writeSpec(csv: "folder.csv")
        try assertOneError(["produce", "pipelines/p.yaml"], "error: source 'c': data/folder.csv: is a folder, not a file")
        try assertOneError(["run", "pipelines/p.yaml"], "error: source 'c': data/folder.csv: is a folder, not a file")
    }

    func testASymlinkLoopIsCalledOneNotAMissingFile() throws {
        try assertOneError(["infer", "data/loop_a.csv"], "error: data/loop_a.csv: is a symlink loop")
        try writeSpec(csv: "loop_a.csv")
        try assertOneError(["run", "pipelines/p.yaml"], "error: source 'c': data/loop_a.csv: is a symlink loop")
        try assertOneError(["validate", "data/loop_a.csv"], "data/loop_a.csv:1:1: error: cannot read spec file: it is a symlink loop")
    }

    func testADanglingSymlinkAndAMissingFile() throws {
        try assertOneError(["infer", "data/dangling.csv"], "error: data/dangling.csv: is a symlink to a file that does not exist")
        try assertOneError(["infer", "data/none.csv"], "error: data/none.csv: no such file")
        try writeSpec(csv: "none.csv")
        try assertOneError(["produce", "pipelines/p.yaml"], "error: source 'c': data/none.csv: no such file")
    }

    func testADeviceIsNotACSV() throws {
        try assertOneError(["infer", "/dev/zero"], "error: /dev/zero: is not a regular file (a pipe, socket or device)")
    }

    /// The path is the user's, but a terminal escape in it is still printed escaped.
    func testAPathWithATerminalEscapeIsPrintedEscaped() throws {
        try FileManager.default.createDirectory(atPath: dir + "/data/e\u{1B}[31m", withIntermediateDirectories: true)
        try assertOneError(["infer", "data/e\u{1B}[31m"], #"error: data/e\u001B[31m: is a folder, not a file"#)
    }

    /// `init` may read a CSV outside the project (the user named it); its next step says that
    /// the generated spec then needs the opt-in.
    func testInitWithACSVOutsideTheProjectSaysSo() throws {
        try "a,b\n1,2\n".write(toFile: dir + "/data/outside.csv", atomically: true, encoding: .utf8)
        let result = try run(["init", "x", "--csv", "data/outside.csv", "--project", "proj"])
        XCTAssertEqual(result.status, 0, result.stdout + result.stderr)
        XCTAssertEqual(result.stdoutLines.last, "next: pipectl plan proj/pipelines/x.yaml --allow-outside-project")
        let refused = try run(["validate", "proj/pipelines/x.yaml"])
        XCTAssertEqual(
            refused.stderrLines,
            [
                "proj/pipelines/x.yaml:8:11: error: source file 'data/outside.csv' is outside the project folder 'proj'; pass --allow-outside-project to read it"
            ])
        XCTAssertEqual(try run(["validate", "proj/pipelines/x.yaml", "--allow-outside-project"]).stdoutLines, ["ok"])
    }
}
