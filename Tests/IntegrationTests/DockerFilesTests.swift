import Foundation
import PipectlTestSupport
import XCTest
import Yams

/// docker-compose.yml and the Dockerfile, checked for what matters without a Docker engine
/// (this machine has none): the compose file is valid for docker-compose, the services and
/// their health checks are there, every image is pinned, no secret is committed, and the
/// pipectl service runs a spec that `pipectl validate` accepts.
final class DockerFilesTests: XCTestCase {
    let root = TestStack.repoRoot

    func run(_ program: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let result = try ChildProcess.run(program, arguments, workingDirectory: root)
        return (result.status, result.output)
    }

    func compose() throws -> [String: Any] {
        let text = try String(contentsOfFile: root + "/docker-compose.yml", encoding: .utf8)
        return try XCTUnwrap(try Yams.load(yaml: text) as? [String: Any])
    }

    func testComposeFileIsValidForDockerCompose() throws {
        let program = try XCTUnwrap(
            ["/usr/bin/docker-compose", "/usr/local/bin/docker-compose"].first { FileManager.default.isExecutableFile(atPath: $0) },
            "docker-compose is not installed (make deps installs Debian's docker-compose)")
        let result = try run(program, ["--env-file", ".env.example", "config", "-q"])
        XCTAssertEqual(result.status, 0, result.output)
        // Without the credentials it refuses, naming what to set, rather than using a default.
        let empty = NSTemporaryDirectory() + "pipectl-empty-\(getpid()).env"
        _ = FileManager.default.createFile(atPath: empty, contents: Data())
        defer { try? FileManager.default.removeItem(atPath: empty) }
        let bare = try run(program, ["--env-file", empty, "config", "-q"])
        XCTAssertNotEqual(bare.status, 0, bare.output)
        XCTAssertTrue(bare.output.contains("set POSTGRES_PASSWORD in .env (copy .env.example)"), bare.output)
    }

    func testServicesHealthChecksAndStartOrder() throws {
        let services = try XCTUnwrap(try compose()["services"] as? [String: Any])
        XCTAssertEqual(Set(services.keys), ["kafka", "postgres", "pipectl", "kafka-ui", "pgadmin"])
        for name in ["kafka", "postgres"] {
            let service = try XCTUnwrap(services[name] as? [String: Any])
            XCTAssertNotNil(service["healthcheck"], "\(name) needs a healthcheck")
        }
        let kafka = try XCTUnwrap(services["kafka"] as? [String: Any])
        let env = try XCTUnwrap(kafka["environment"] as? [String: Any])
        XCTAssertEqual(env["KAFKA_PROCESS_ROLES"] as? String, "broker,controller", "a single KRaft node, no ZooKeeper")
        let pipectl = try XCTUnwrap(services["pipectl"] as? [String: Any])
        let dependsOn = try XCTUnwrap(pipectl["depends_on"] as? [String: Any])
        for name in ["kafka", "postgres"] {
            XCTAssertEqual((dependsOn[name] as? [String: Any])?["condition"] as? String, "service_healthy", "pipectl waits for \(name)")
        }
        for name in ["kafka-ui", "pgadmin"] {
            XCTAssertEqual((services[name] as? [String: Any])?["profiles"] as? [String], ["ui"], "\(name) only with --profile ui")
        }
        XCTAssertTrue(FileManager.default.fileExists(atPath: root + "/docker/pgadmin-servers.json"))
    }

    func testEveryImageIsPinnedAndNoSecretIsCommitted() throws {
        let services = try XCTUnwrap(try compose()["services"] as? [String: Any])
        for (name, value) in services {
            guard let image = (value as? [String: Any])?["image"] as? String else {
                XCTFail("\(name) has no image")
                continue
            }
            let tag = image.split(separator: ":").dropFirst().last.map(String.init)
            XCTAssertNotNil(tag, "\(name): \(image) has no tag")
            XCTAssertNotEqual(tag, "latest", "\(name): \(image)")
        }
        let dockerfile = try String(contentsOfFile: root + "/Dockerfile", encoding: .utf8)
        let froms = dockerfile.split(separator: "\n").filter { $0.hasPrefix("FROM ") }
        XCTAssertGreaterThanOrEqual(froms.count, 2, "a multi-stage build")
        for line in froms {
            let image = String(line.split(separator: " ")[1])
            XCTAssertTrue(image.contains(":") && !image.hasSuffix(":latest"), "unpinned: \(line)")
        }
        XCTAssertTrue(dockerfile.contains("\nUSER pipectl\n"), "runs as a non-root user")
        XCTAssertTrue(dockerfile.contains(#"ENTRYPOINT ["pipectl"]"#))
        // Passwords come from .env, which git ignores; the compose file only refers to them.
        let text = try String(contentsOfFile: root + "/docker-compose.yml", encoding: .utf8)
        for line in text.split(separator: "\n") where line.uppercased().contains("PASSWORD:") {
            XCTAssertTrue(line.contains("${"), "a literal password: \(line)")
        }
        XCTAssertTrue(try String(contentsOfFile: root + "/.gitignore", encoding: .utf8).split(separator: "\n").contains(".env"))
        XCTAssertTrue(try String(contentsOfFile: root + "/.env.example", encoding: .utf8).contains("POSTGRES_PASSWORD="))
    }

    func testThePipectlServiceRunsASpecThatValidates() throws {
        let services = try XCTUnwrap(try compose()["services"] as? [String: Any])
        let command = try XCTUnwrap((services["pipectl"] as? [String: Any])?["command"] as? [String])
        XCTAssertEqual(Array(command.prefix(4)), ["run", "--follow", "--http", "0.0.0.0:9464"])
        let spec = try XCTUnwrap(command.last)
        let result = try pipectl(["validate", root + "/" + spec], environment: ["KAFKA_BROKERS": "kafka:9092"])
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertEqual(result.output, "ok\n")
    }
}
