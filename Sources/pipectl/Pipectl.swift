import ArgumentParser
import Foundation
import PipelineCompiler
import PipelineRuntime
import KafkaAdapter
import PipelineSpec
import PostgresAdapter

@main
struct Pipectl: ParsableCommand {
    static func main() {
        // Progress lines ("Sent batch of ...") must show as they happen, also in a file or pipe.
        setvbuf(stdout, nil, _IOLBF, 0)
        ProcessMemory.bound(environment: ProcessInfo.processInfo.environment)
        var command: ParsableCommand
        if CommandLine.arguments.dropFirst().first == "--version" {
            print(versionText())
            return
        }
        do {
            command = try parseAsRoot()
            try command.run()
        } catch {
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

/// `--allow-dead-letters` for the commands that load data.
struct DeadLetterPolicy: ParsableArguments {
    @Flag(help: "Exit with status 0 even when rows were dead-lettered (default: status 3).")
    var allowDeadLetters = false

    /// Throws exit status 3 after saying why, unless dead letters are allowed.
    func check(deadLetters: Int, spec: String) throws {
        guard deadLetters > 0, !allowDeadLetters else { return }
        printError("finished with \(deadLetters) dead-lettered row\(deadLetters == 1 ? "" : "s"): see `pipectl dlq list \(spec)` (exit status 3; --allow-dead-letters exits 0)")
        throw ExitCode(ExitStatus.deadLetters)
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

/// Runs a command body, turning known failures into one clear line each and exit status 1
/// (never a stack trace).
func reportingErrors(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let error as DiagnosticError {
        printError(error.description)
        let count = error.diagnostics.filter { $0.severity == .error }.count
        if count > 1 { printError("\(count) errors") }
        throw ExitCode(1)
    } catch let error as ExitCode {
        throw error
    } catch let error as CleanExit {
        throw error
    } catch {
        // Errors quote paths and names the user or a spec supplied: no raw control characters
        // reach the terminal (line structure kept).
        let text = "\(error)".split(separator: "\n", omittingEmptySubsequences: false).map { Excerpt.escaped(String($0)) }.joined(separator: "\n")
        printError("error: \(text)")
        throw ExitCode(1)
    }
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
    @Flag(name: .customLong("allow-outside-project"),
          help: "Let the spec name schema and CSV files outside its project folder (the parent of the spec's folder).")
    var allowOutsideProject = false
}

struct Validate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Check a spec; print 'ok' or every error with its file:line:col.")
    @OptionGroup var spec: SpecArgument

    func run() throws {
        try reportingErrors {
            _ = try compile(spec)
            print("ok")
        }
    }
}
