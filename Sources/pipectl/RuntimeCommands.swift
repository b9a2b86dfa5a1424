import ArgumentParser
import PipelineCompiler

struct Run: ParsableCommand {}
struct Produce: ParsableCommand {}
struct Consume: ParsableCommand {}
struct Reset: ParsableCommand {}
struct DeadLetters: ParsableCommand { static let configuration = CommandConfiguration(commandName: "dlq") }
struct Dev: ParsableCommand {}
enum LivePlan { static func show(_ p: Pipeline) throws {} }
