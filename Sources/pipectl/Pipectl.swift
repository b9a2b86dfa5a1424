import ArgumentParser
import Foundation
import PipelineCompiler
import PipelineSpec

@main
struct Pipectl: ParsableCommand {
    static func main() {
        // Progress lines ("Sent batch of ...") must show as they happen, also in a file or pipe.
        setvbuf(stdout, nil, _IOLBF, 0)
        var command: ParsableCommand
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
        subcommands: [
            Validate.self, Plan.self, Generate.self, Infer.self, Init.self,
            Apply.self, Run.self, Produce.self, Consume.self, Reset.self, DeadLetters.self, Dev.self,
        ])
}

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
