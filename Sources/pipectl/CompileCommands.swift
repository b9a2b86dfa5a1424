import ArgumentParser
import Foundation
import PipelineCodegen
import PipelineCompiler
import PipelineSpec
import RecordFormats

struct Plan: PipectlCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the stage graph, the topics and the DDL a spec needs (offline by default).")
    @OptionGroup var spec: SpecArgument
    @Flag(help: "Print the plan as JSON.") var json = false
    @Flag(help: "Compare with the live database and show what would change.") var live = false

    func run() throws {
        let pipeline = try compile(spec)
        let plan = PipelineCompiler.Plan(pipeline)
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try encoder.encode(plan), as: UTF8.self))
        } else {
            print(plan.text, terminator: "")
        }
        if live { try LivePlan.show(pipeline) }
    }
}

/// What `generate` writes: `--target swift` (the default) or `--target spark`.
enum GenerateTarget: String, ExpressibleByArgument, CaseIterable {
    /// DIR/sql/<table>.sql and DIR/Sources/<Name>Records/Records.swift.
    case swift
    /// DIR/spark/<sink>_job.py per sink and DIR/spark/README.md.
    case spark
}

struct Generate: PipectlCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Write the DDL (DIR/sql/<table>.sql) and typed Swift records (DIR/Sources/<Name>Records/Records.swift), or with --target spark a PySpark job per sink (DIR/spark/<sink>_job.py)."
    )
    @OptionGroup var spec: SpecArgument
    @Option(help: "The folder to write into.") var out: String
    @Option(help: "What to generate: swift (DDL and Swift records) or spark (a PySpark job per sink, see docs/spark.md).")
    var target: GenerateTarget = .swift

    func run() throws {
        let pipeline = try compile(spec)
        let fm = FileManager.default
        var written: [String] = []
        if target == .spark {
            let files: [(name: String, text: String)]
            do {
                files = try SparkJob.files(for: pipeline)
            } catch let error as SparkJobError {
                throw ValidationError(error.message)
            }
            try fm.createDirectory(atPath: SpecParser.join(out, "spark"), withIntermediateDirectories: true)
            for file in files {
                let path = SpecParser.join(out, file.name)
                try file.text.write(toFile: path, atomically: true, encoding: .utf8)
                written.append(path)
            }
            for path in written { print("wrote \(path)") }
            return
        }
        let sqlDir = SpecParser.join(out, "sql")
        try fm.createDirectory(atPath: sqlDir, withIntermediateDirectories: true)
        for file in SQLFiles.files(for: pipeline) {
            let path = SpecParser.join(sqlDir, file.name)
            try file.text.write(toFile: path, atomically: true, encoding: .utf8)
            written.append(path)
        }
        let module = SwiftRecords.typeName(pipeline.name) + "Records"
        let swiftDir = SpecParser.join(out, "Sources/\(module)")
        try fm.createDirectory(atPath: swiftDir, withIntermediateDirectories: true)
        let swiftPath = SpecParser.join(swiftDir, "Records.swift")
        try SwiftRecords.generate(for: pipeline).write(toFile: swiftPath, atomically: true, encoding: .utf8)
        written.append(swiftPath)
        for path in written { print("wrote \(path)") }
    }
}

struct CSVOptions: ParsableArguments {
    @Option(help: "Field delimiter (one character).") var delimiter: String = ","
    @Option(help: "How many records to sample.") var sample: Int = 10_000
    @Flag(inversion: .prefixedNo, help: "Whether the first record is a header.") var header = true
    @Option(help: "How to read dates like 03/05/2011: mdy (5 March, the default), dmy (3 May) or ymd (year first only).")
    var dateOrder: String = "mdy"
    @Option(help: "The file's encoding: utf-8, utf-16le, utf-16be, latin1 or windows-1252 (default: detected).")
    var encoding: String?

    /// The inference settings for `file`, with its encoding (given or detected); prints on
    /// standard error which encoding was detected and why.
    func inference(for file: String) throws -> SchemaInference {
        guard delimiter.utf8.count == 1 else { throw ValidationError("--delimiter must be a single ASCII character, got '\(delimiter)'") }
        guard sample > 0 else { throw ValidationError("--sample must be a positive number, got \(sample)") }
        guard let order = DateOrder(rawValue: dateOrder) else { throw ValidationError("--date-order must be mdy, dmy or ymd, got '\(dateOrder)'") }
        var declared: TextEncoding?
        if let encoding {
            guard let e = TextEncoding(rawValue: encoding.lowercased()) else {
                throw ValidationError("--encoding must be one of \(TextEncoding.names), got '\(encoding)'")
            }
            declared = e
        }
        var inference = SchemaInference()
        inference.delimiter = delimiter.utf8.first!
        inference.sampleSize = sample
        inference.header = header
        inference.dateOrder = order
        let (found, why) = try SchemaInference.encoding(of: file, declared: declared)
        if let why { printError("note: \(file) read as \(found.rawValue): \(why)") }
        inference.encoding = found
        return inference
    }
}

struct Infer: PipectlCommand {
    static let configuration = CommandConfiguration(abstract: "Print the schema inferred from a CSV file.")
    @Argument(help: "The CSV file.") var file: String
    @Option(help: "The schema's name (default: the file's base name).") var name: String?
    @OptionGroup var csv: CSVOptions

    func run() throws {
        let inference = try csv.inference(for: file)
        let columns = try inference.infer(path: file)
        let schemaName = name ?? CSVReader.normalizeHeader([((file as NSString).lastPathComponent as NSString).deletingPathExtension])[0]
        var yaml = SchemaInference.schemaYAML(name: schemaName, columns: columns, from: file)
        if inference.encoding != .utf8 {
            yaml = "# The file is \(inference.encoding.rawValue): its source needs 'encoding: \(inference.encoding.rawValue)'.\n" + yaml
        }
        print(yaml, terminator: "")
    }
}

struct Init: PipectlCommand {
    static let configuration = CommandConfiguration(
        abstract: "Infer a schema from a CSV and write schemas/NAME.yaml and pipelines/NAME.yaml, ready to run.")
    @Argument(help: "The pipeline and table name (a-z, 0-9, _).") var name: String
    @Option(help: "The CSV file to load.") var csv: String
    @Option(help: "The project folder holding schemas/ and pipelines/.") var project: String = "."
    @Flag(help: "Overwrite existing files.") var force = false
    @OptionGroup var options: CSVOptions

    func run() throws {
        guard !name.isEmpty, name.count <= 40,
            name.unicodeScalars.allSatisfy({ ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "_" }),
            !("0"..."9").contains(name.unicodeScalars.first!)
        else {
            throw ValidationError("NAME '\(name)' must be 1 to 40 of a-z, 0-9 and _, not starting with a digit")
        }
        let inference = try options.inference(for: csv)
        let columns = try inference.infer(path: csv)
        let schemaPath = SpecParser.join(project, "schemas/\(name).yaml")
        let pipelinePath = SpecParser.join(project, "pipelines/\(name).yaml")
        let fm = FileManager.default
        for path in [schemaPath, pipelinePath] where fm.fileExists(atPath: path) && !force {
            throw ValidationError("\(path) already exists; pass --force to overwrite it")
        }
        // The CSV path as the pipeline file will see it (relative to pipelines/).
        let absoluteCSV = csv.hasPrefix("/") ? csv : fm.currentDirectoryPath + "/" + csv
        let absoluteProject = project.hasPrefix("/") ? project : fm.currentDirectoryPath + "/" + project
        let relative = Self.relativePath(from: SpecParser.normalize(absoluteProject + "/pipelines"), to: SpecParser.normalize(absoluteCSV))
        let schemaText = SchemaInference.schemaYAML(name: name, columns: columns, from: csv)
        let pipelineText = SchemaInference.pipelineYAML(
            name: name, csvPath: relative, delimiter: options.delimiter.utf8.first!,
            encoding: inference.encoding, columns: columns)
        // The result must compile, and is compiled before anything is written: a failing
        // init leaves no half-made files behind.
        let texts = [SpecParser.normalize(schemaPath): schemaText, SpecParser.normalize(pipelinePath): pipelineText]
        // The user named this CSV, so reading it is allowed here; later commands need the
        // opt-in when it lies outside the project, and the hint says so.
        let outside = !ProjectFolder(path: project).contains(csv)
        let parser = SpecParser(
            allowOutsideProject: outside,
            readFile: { path in
                if let text = texts[SpecParser.normalize(path)] { return text }
                return try String(contentsOfFile: path, encoding: .utf8)
            })
        let pipeline = try Compiler().compile(try parser.parse(path: pipelinePath))
        for warning in pipeline.warnings { printError(warning.description) }
        try fm.createDirectory(atPath: SpecParser.join(project, "schemas"), withIntermediateDirectories: true)
        try fm.createDirectory(atPath: SpecParser.join(project, "pipelines"), withIntermediateDirectories: true)
        try schemaText.write(toFile: schemaPath, atomically: true, encoding: .utf8)
        try pipelineText.write(toFile: pipelinePath, atomically: true, encoding: .utf8)
        print("wrote \(schemaPath) (\(columns.count) columns)")
        print("wrote \(pipelinePath)")
        print("next: pipectl plan \(pipelinePath)\(outside ? " " + SpecParser.outsideProjectFlag : "")")
    }

    static func relativePath(from directory: String, to file: String) -> String {
        let a = directory.split(separator: "/")
        let b = file.split(separator: "/")
        var common = 0
        while common < a.count, common < b.count, a[common] == b[common] { common += 1 }
        return (Array(repeating: "..", count: a.count - common) + b[common...].map(String.init)).joined(separator: "/")
    }
}
