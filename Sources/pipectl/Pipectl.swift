import ArgumentParser
import Foundation
import KafkaAdapter
import PipelineCompiler
import PipelineRuntime
import PipelineSpec
import PostgresAdapter

@main
struct Pipectl: ParsableCommand {
    /// Parses, runs the command, and is the one place where an error becomes its message on
    /// standard error and an exit status (`CommandFailure.report`).
    static func main() {
        // Progress lines ("Sent batch of ...") must show as they happen, also in a file or pipe.
        lineBufferStandardOutput()
        ProcessMemory.bound(environment: ProcessInfo.processInfo.environment)
        if CommandLine.arguments.dropFirst().first == "--version" {
            print(versionText())
            return
        }
        var command: any ParsableCommand
        do {
            command = try parseAsRoot()
        } catch {
            // Usage errors (64), --help and friends: swift-argument-parser's own texts.
            exit(withError: error)
        }
        do {
            try command.run()
        } catch let error where command is any PipectlCommand && !(error is CleanExit) {
            Foundation.exit(CommandFailure.report(error))
        } catch {
            // The parser's own commands (help, a command group run without a subcommand).
            exit(withError: error)
        }
    }

    static let configuration = CommandConfiguration(
        commandName: "pipectl",
        abstract: "Compile, plan, generate and run declarative CSV -> Kafka -> PostgreSQL pipelines.",
        discussion: "pipectl --version prints the version and the loaded librdkafka and libpq.",
        subcommands: [
            Validate.self, Plan.self, Generate.self, Infer.self, Init.self,
            Apply.self, Run.self, Produce.self, Consume.self, Status.self, Reset.self, DeadLetters.self, Dev.self,
        ])
}

/// pipectl's exit statuses, one table in docs/operations.md ("Exit codes").
enum ExitStatus {
    /// Done, every record stored (or nothing to do).
    static let ok: Int32 = 0
    /// An error: a bad spec, file or flag, or a failure while running (one line on stderr).
    static let error: Int32 = 1
    /// `plan --live`: the live database refuses the plan (a column type differs, …).
    static let refused: Int32 = 2
    /// Finished, but rows were dead-lettered (see `pipectl dlq list`); `--allow-dead-letters`
    /// makes this 0.
    static let deadLetters: Int32 = 3
    /// Ctrl-C / SIGTERM before every record was sent or stored; running again finishes.
    static let interrupted: Int32 = 4
    /// A server the command checks is down (`dev status`).
    static let unavailable: Int32 = 5
    /// `status`: the pipeline is unhealthy (a topic missing, records waiting with no commit).
    static let unhealthy: Int32 = 6
}

/// A command of pipectl's own (not the parser's `help`): its errors are reported by
/// `CommandFailure.report`.
protocol PipectlCommand: ParsableCommand {}

/// How a command ends other than with success or a plain error: each case has its exit
/// status (`ExitStatus`) and, where the command has not said it on standard output, its line
/// for standard error.
enum CommandFailure: Error, Equatable {
    /// `plan --live`: this many changes are marked 'refused' (status 2).
    case planRefused(changes: Int)
    /// The load finished with dead-lettered rows (status 3); `spec` is the spec's path as given.
    case deadLettered(rows: Int, spec: String)
    /// Ctrl-C / SIGTERM before everything was sent or stored (status 4); the command already
    /// printed how far it got and what to run.
    case interrupted
    /// `dev status`: a server of the stack is down or it was never set up (status 5); the
    /// status lines say which.
    case stackDown
    /// `status`: the pipeline is unhealthy (status 6); the report says why.
    case unhealthy

    var exitStatus: Int32 {
        switch self {
        case .planRefused: ExitStatus.refused
        case .deadLettered: ExitStatus.deadLetters
        case .interrupted: ExitStatus.interrupted
        case .stackDown: ExitStatus.unavailable
        case .unhealthy: ExitStatus.unhealthy
        }
    }

    /// The line on standard error, if the command has not already said why on standard output.
    var message: String? {
        switch self {
        case .planRefused(let changes):
            "the live database refuses this plan (\(changes) change\(changes == 1 ? "" : "s") marked 'refused'); apply and run would stop"
        case .deadLettered(let rows, let spec):
            "finished with \(rows) dead-lettered row\(rows == 1 ? "" : "s"): see `pipectl dlq list \(spec)` (exit status 3; --allow-dead-letters exits 0)"
        case .interrupted, .stackDown, .unhealthy:
            nil
        }
    }

    /// Prints what `error` means for the person at the terminal (one line, or a spec's
    /// diagnostics) and returns the exit status: the only place errors are turned into both.
    /// Errors quote paths and names the user or a spec supplied: no raw control characters
    /// reach the terminal (line structure kept).
    static func report(_ error: any Error) -> Int32 {
        switch error {
        case let failure as CommandFailure:
            if let message = failure.message { printError(message) }
            return failure.exitStatus
        case let error as DiagnosticError:
            printError(error.description)
            let count = error.diagnostics.filter { $0.severity == .error }.count
            if count > 1 { printError("\(count) errors") }
            return ExitStatus.error
        case let code as ExitCode:
            return code.rawValue
        default:
            let text = "\(error)".split(separator: "\n", omittingEmptySubsequences: false).map { Excerpt.escaped(String($0)) }.joined(separator: "\n")
            printError("error: \(text)")
            return ExitStatus.error
        }
    }
}

/// `--allow-dead-letters` for the commands that load data.
struct DeadLetterPolicy: ParsableArguments {
    @Flag(help: "Exit with status 0 even when rows were dead-lettered (default: status 3).")
    var allowDeadLetters = false

    /// Throws `CommandFailure.deadLettered` (exit status 3), unless dead letters are allowed.
    func check(deadLetters: Int, spec: String) throws {
        guard deadLetters > 0, !allowDeadLetters else { return }
        throw CommandFailure.deadLettered(rows: deadLetters, spec: spec)
    }
}

/// pipectl's version and the C libraries it loaded (not the ones it was compiled against).
func versionText() -> String {
    "pipectl \(pipectlVersion)\nlibrdkafka \(KafkaLibrary.version)\nlibpq \(PostgresLibrary.version)"
}

let pipectlVersion = "0.4.0"

/// Prints to standard error.
func printError(_ text: String) {
    FileHandle.standardError.write(Data((text.hasSuffix("\n") ? text : text + "\n").utf8))
}

/// Loads and compiles a spec: the front half of every command.
func compile(_ path: String, allowOutsideProject: Bool = false) throws -> Pipeline {
    let spec = try SpecParser(allowOutsideProject: allowOutsideProject).parse(path: path)
    let pipeline = try Compiler().compile(spec)
    // Warnings go to standard error and never stop a command.
    for warning in pipeline.warnings { printError(warning.description) }
    return pipeline
}

func compile(_ argument: SpecArgument) throws -> Pipeline {
    try compile(argument.file, allowOutsideProject: argument.allowOutsideProject)
}

/// The spec every command reads, and the one switch that lets it reach beyond its project.
struct SpecArgument: ParsableArguments {
    @Argument(help: "The pipeline spec, e.g. pipelines/housing.yaml.")
    var file: String

    /// `--allow-outside-project`: off by default, so validating a spec from an untrusted
    /// place never reads files outside the folder that holds its `pipelines/`.
    @Flag(
        name: .customLong("allow-outside-project"),
        help: "Let the spec name schema and CSV files outside its project folder (the parent of the spec's folder).")
    var allowOutsideProject = false
}

struct Validate: PipectlCommand {
    static let configuration = CommandConfiguration(abstract: "Check a spec; print 'ok' or every error with its file:line:col.")
    @OptionGroup var spec: SpecArgument

    func run() throws {
        _ = try compile(spec)
        print("ok")
    }
}
