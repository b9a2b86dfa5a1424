import Foundation

/// Ctrl-C / SIGTERM: the loops finish and commit their current batch; the command then exits
/// 4 (interrupted, docs/spec.md "Exit codes"), its summary saying how to go on.
public enum StopSignal {
    // Unsafe by necessity: a signal handler may only write a sig_atomic_t (C11 7.14.1.1).
    nonisolated(unsafe) private static var flag: sig_atomic_t = 0

    /// Whether SIGINT or SIGTERM arrived since `install()`; the producer and consumer loops poll it.
    public static var requested: Bool { flag != 0 }

    /// Replaces the SIGINT and SIGTERM handlers with ones that only set the flag (POSIX `signal`);
    /// call once, early in the process.
    public static func install() {
        signal(SIGINT) { _ in StopSignal.flag = 1 }
        signal(SIGTERM) { _ in StopSignal.flag = 1 }
    }

    /// Test-only crash points: `PIPECTL_CRASH_AT=before-commit` (or `during-copy`,
    /// `after-commit`) kills the process with SIGKILL at that moment of the Nth batch
    /// (`PIPECTL_CRASH_BATCH`, default 2).
    static let crashPoint = ProcessInfo.processInfo.environment["PIPECTL_CRASH_AT"]
    static let crashBatch = Int(ProcessInfo.processInfo.environment["PIPECTL_CRASH_BATCH"] ?? "") ?? 2

    static func crashIfAsked(_ point: String, batch: Int) {
        if crashPoint == point, batch >= crashBatch {
            kill(getpid(), SIGKILL)
        }
    }
}
