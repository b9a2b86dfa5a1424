import Dispatch
import Foundation
import Subprocess
import SystemPackage
import XCTest

/// A program the tests start (pipectl, spark-submit), run with swift-subprocess: its output
/// is collected while it runs, signals go through `Execution.send(signal:)`, and a synchronous
/// test method can wait for it with a timeout.
///
/// The swift-subprocess `run` is async and its `Execution` must not leave the closure, so the
/// closure runs in a detached task for the whole life of the child: it reads standard output
/// (and standard error) until end of file and serves signal requests sent from the test
/// thread. XCTest test methods here stay synchronous: they block on the child, never on the
/// cooperative pool (so call this from synchronous code only: `init` blocks until the spawn).
///
/// What swift-subprocess 1.0 does not do, and how this fills in: it has no wait with a timeout
/// (the test thread polls `isRunning`), and no `Execution` outside the closure (signals are
/// handed to the closure; `send` falls back to kill(2) in the short window after the child
/// closed its output and before it is reaped).
public final class ChildProcess: Sendable {
    /// What a finished child left: its status and output.
    public struct Outcome: Sendable {
        /// The exit status, or the signal number when `signaled` (Foundation's `Process` convention).
        public var status: Int32
        /// Whether a signal ended the child.
        public var signaled: Bool
        /// Standard output, with standard error in it unless the child was started with
        /// `separateStandardError`.
        public var output: String
        /// Standard error when started with `separateStandardError`, else empty.
        public var standardError: String
    }

    private struct SignalRequest: Sendable {
        let signal: Signal
        let delivered: DispatchSemaphore
    }

    private struct State {
        var processIdentifier: pid_t = 0
        var output: [UInt8] = []
        var standardError: [UInt8] = []
        var startFailure: (any Error)?
        /// The closure has returned: signals can no longer go through the `Execution`.
        var closed = false
        var termination: TerminationStatus?
    }

    /// The command line, for failure messages.
    public let commandLine: String
    private let state = Locked(State())
    private let signals: AsyncStream<SignalRequest>.Continuation

    /// Starts `executable` with `arguments`; the environment is this process's with
    /// `environment` set and `unset` removed. Throws when the program cannot be started.
    public init(
        _ executable: String, _ arguments: [String], environment: [String: String] = [:], unset: [String] = [],
        workingDirectory: String? = nil, separateStandardError: Bool = false
    ) throws {
        commandLine = ([executable] + arguments).joined(separator: " ")
        let (requests, continuation) = AsyncStream<SignalRequest>.makeStream()
        signals = continuation
        var changes: [Environment.Key: String?] = [:]
        for (name, value) in environment { changes[Environment.Key(rawValue: name)!] = value }
        for name in unset { changes[Environment.Key(rawValue: name)!] = String?.none }
        let configuration = Configuration(
            executable: .path(FilePath(executable)), arguments: Arguments(arguments), environment: .inherit.updating(changes),
            workingDirectory: workingDirectory.map { FilePath($0) })
        let started = DispatchSemaphore(value: 0)
        let state = self.state
        Task.detached {
            do {
                let result: TerminationStatus
                if separateStandardError {
                    result = try await Subprocess.run(configuration, input: .none, output: .sequence, error: .sequence) { execution in
                        await Self.supervise(
                            execution.processIdentifier.value, output: execution.standardOutput,
                            standardError: execution.standardError, requests: requests, state: state,
                            started: started
                        ) { try? execution.send(signal: $0) }
                    }.terminationStatus
                } else {
                    result = try await Subprocess.run(configuration, input: .none, output: .sequence, error: .combinedWithOutput) { execution in
                        await Self.supervise(
                            execution.processIdentifier.value, output: execution.standardOutput,
                            standardError: nil, requests: requests, state: state,
                            started: started
                        ) { try? execution.send(signal: $0) }
                    }.terminationStatus
                }
                state.withLock { $0.termination = result }
            } catch {
                let neverStarted = state.withLock { s in
                    if s.processIdentifier == 0 {
                        s.startFailure = error
                        return true
                    }
                    // Started, then failed reading its output: report it as a failed exit.
                    s.output += Array("\n[ChildProcess: \(error)]\n".utf8)
                    s.termination = .exited(-1)
                    return false
                }
                if neverStarted { started.signal() }
            }
            continuation.finish()
        }
        started.wait()
        if let failure = state.withLock({ $0.startFailure }) { throw failure }
    }

    /// The body of the swift-subprocess closure: collect output until end of file while serving
    /// signal requests, then stop taking requests.
    private static func supervise(
        _ pid: pid_t, output: SubprocessOutputSequence, standardError: SubprocessOutputSequence?,
        requests: AsyncStream<SignalRequest>, state: Locked<State>, started: DispatchSemaphore,
        send: @escaping @Sendable (Signal) -> Void
    ) async {
        state.withLock { $0.processIdentifier = pid }
        started.signal()
        await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                do { for try await buffer in output { state.withLock { $0.output += buffer.withUnsafeBytes { Array($0) } } } } catch {}
                return true
            }
            if let standardError {
                group.addTask {
                    do { for try await buffer in standardError { state.withLock { $0.standardError += buffer.withUnsafeBytes { Array($0) } } } } catch {}
                    return true
                }
            }
            group.addTask {
                for await request in requests {
                    send(request.signal)
                    request.delivered.signal()
                }
                return false
            }
            var readers = standardError == nil ? 1 : 2
            while let isReader = await group.next() {
                if isReader { readers -= 1 }
                if readers == 0 { group.cancelAll() }
            }
        }
        state.withLock { $0.closed = true }
    }

    /// The child's process id.
    public var processIdentifier: pid_t { state.withLock { $0.processIdentifier } }

    /// Whether the child has not yet been reaped.
    public var isRunning: Bool { state.withLock { $0.termination == nil } }

    /// Output so far (standard output and, unless separated, standard error), decoded as UTF-8.
    public func output() -> String { String(decoding: state.withLock { $0.output }, as: UTF8.self) }

    /// Standard error so far when started with `separateStandardError`.
    public func standardError() -> String { String(decoding: state.withLock { $0.standardError }, as: UTF8.self) }

    /// The exit status, or the signal number when a signal ended it; -1 while running.
    public var terminationStatus: Int32 {
        switch state.withLock({ $0.termination }) {
        case .exited(let code): return code
        case .signaled(let signal): return signal
        case nil: return -1
        }
    }

    /// Whether a signal ended the child.
    public var signaled: Bool {
        if case .signaled = state.withLock({ $0.termination }) { return true }
        return false
    }

    /// Sends the signal numbered `signal` (SIGINT, SIGSTOP, ...) and returns once it is delivered
    /// (a no-op when the child is already reaped).
    public func send(_ signal: Int32) {
        let signal = Signal(rawValue: signal)
        let request = SignalRequest(signal: signal, delivered: DispatchSemaphore(value: 0))
        let queued = state.withLock { s -> Bool in
            if s.termination != nil { return false }
            if s.closed { return false }
            signals.yield(request)
            return true
        }
        if queued, request.delivered.wait(timeout: .now() + 10) == .success { return }
        // Fallback, kill(2) by pid: swift-subprocess offers signals only inside the closure, which
        // has returned once the child closed its output (it has exited or is exiting) but before
        // `run` reaped it; the pid cannot be reused until then.
        state.withLock { s in if s.termination == nil, s.processIdentifier > 0 { kill(s.processIdentifier, signal.rawValue) } }
    }

    /// SIGKILL, then waits until the child is reaped.
    public func kill9() {
        send(SIGKILL)
        while isRunning { usleep(20_000) }
    }

    /// Waits up to `timeout` seconds; whether the child finished.
    @discardableResult
    public func wait(timeout: Double) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while isRunning, Date() < deadline { usleep(20_000) }
        return !isRunning
    }

    /// Waits up to `timeout` seconds; past it, the test fails and the child gets SIGTERM.
    public func finish(timeout: Double) -> Outcome {
        if !wait(timeout: timeout) {
            XCTFail("\(commandLine) did not finish in \(timeout) s")
            send(SIGTERM)
            while isRunning { usleep(20_000) }
        }
        return Outcome(status: terminationStatus, signaled: signaled, output: output(), standardError: standardError())
    }

    /// Runs to completion: see `init` and `finish(timeout:)`.
    public static func run(
        _ executable: String, _ arguments: [String], environment: [String: String] = [:], unset: [String] = [],
        workingDirectory: String? = nil, separateStandardError: Bool = false, timeout: Double = 300
    ) throws -> Outcome {
        try ChildProcess(
            executable, arguments, environment: environment, unset: unset, workingDirectory: workingDirectory,
            separateStandardError: separateStandardError
        ).finish(timeout: timeout)
    }
}

/// A value behind a lock, shared between the test thread and the child's task.
final class Locked<Value>: @unchecked Sendable {  // every access to `value` holds `lock`
    private let lock = NSLock()
    private var value: Value
    init(_ value: Value) { self.value = value }
    func withLock<T>(_ body: (inout Value) throws -> T) rethrows -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}

/// Runs the pipectl binary under test to completion; its exit status and output (standard
/// output and standard error together). A run longer than `timeout` seconds fails the test.
@discardableResult
public func pipectl(_ arguments: [String], environment: [String: String] = [:], timeout: Double = 300) throws -> (status: Int32, output: String) {
    let result = try ChildProcess.run(TestStack.pipectl, arguments, environment: environment, timeout: timeout)
    return (result.status, result.output)
}

/// Starts the pipectl binary under test in the background.
public func startPipectl(_ arguments: [String], environment: [String: String] = [:]) throws -> ChildProcess {
    try ChildProcess(TestStack.pipectl, arguments, environment: environment)
}
