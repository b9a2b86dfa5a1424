/// Where a piece of a spec came from: `pipelines/housing.yaml:12:7`.
public struct SourceLocation: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// The file as the user named it, or joined to the spec's folder for a schema file
    /// (`pipelines/../schemas/x.yaml` normalised to `schemas/x.yaml`).
    public var file: String
    /// 1-based line number (YAML parser marks are 1-based).
    public var line: Int
    /// 1-based column number on `line`.
    public var column: Int

    /// Memberwise; `line` and `column` are 1-based.
    public init(file: String, line: Int, column: Int) {
        self.file = file
        self.line = line
        self.column = column
    }

    /// `file:line:col`, e.g. `pipelines/housing.yaml:12:7`, as the Swift compiler writes locations.
    public var description: String { "\(file):\(line):\(column)" }

    /// By file name, then line, then column: the order diagnostics are printed in.
    public static func < (lhs: SourceLocation, rhs: SourceLocation) -> Bool {
        (lhs.file, lhs.line, lhs.column) < (rhs.file, rhs.line, rhs.column)
    }
}

/// One message for the person at the terminal, formatted like the Swift compiler's:
/// `pipelines/housing.yaml:12:7: error: unknown type 'flaot' (did you mean 'float'?)`.
public struct Diagnostic: Hashable, Sendable, CustomStringConvertible {
    /// The word after the location: `error` stops the command, `warning` is printed and the command
    /// goes on, `note` is for information only (no stage emits one today).
    public enum Severity: String, Sendable { case error, warning, note }

    /// Whether the diagnostic stops the command (`error`) or not.
    public var severity: Severity
    /// Where in the spec or schema file the problem is; nil for a problem of the whole command (the
    /// line then starts with the severity).
    public var location: SourceLocation?
    /// The text after `error: `, unescaped; `description` escapes control characters.
    public var message: String

    /// A diagnostic; `severity` defaults to `.error`.
    public init(_ severity: Severity = .error, at location: SourceLocation?, _ message: String) {
        self.severity = severity
        self.location = location
        self.message = message
    }

    /// Shorthand for `Diagnostic(.error, at: location, message)`.
    public static func error(_ message: String, at location: SourceLocation?) -> Diagnostic {
        Diagnostic(.error, at: location, message)
    }

    /// One line, whatever the spec held: a name or path with a line break, a terminal escape or
    /// a NEL in it is shown escaped (`\r`, `\u001B`), never sent raw to the terminal.
    public var description: String {
        let text = Excerpt.escaped(message)
        if let location { return "\(Excerpt.escaped(location.description)): \(severity.rawValue): \(text)" }
        return "\(severity.rawValue): \(text)"
    }
}

/// Every error found in a stage, not just the first, sorted by position.
public struct DiagnosticError: Error, Sendable, CustomStringConvertible {
    /// Every diagnostic of the stage (errors and any warnings), sorted by location; those without a
    /// location first, ties by message.
    public var diagnostics: [Diagnostic]

    /// Sorts `diagnostics` by location (no location first), then by message.
    public init(_ diagnostics: [Diagnostic]) {
        self.diagnostics = diagnostics.sorted { a, b in
            switch (a.location, b.location) {
            case (let l?, let r?): return l == r ? a.message < b.message : l < r
            case (nil, _?): return true
            case (_?, nil): return false
            case (nil, nil): return a.message < b.message
            }
        }
    }

    /// One diagnostic per line, in order: what the CLI prints before exiting with status 1.
    public var description: String { diagnostics.map(\.description).joined(separator: "\n") }
}

/// Collects diagnostics while a stage keeps going, so one run reports everything.
public struct DiagnosticBag: Sendable {
    /// Everything appended so far, in the order found (sorted only when thrown).
    public private(set) var diagnostics: [Diagnostic] = []
    /// An empty bag.
    public init() {}

    /// Appends an error at `location` (nil: no location).
    public mutating func error(_ message: String, at location: SourceLocation?) {
        diagnostics.append(.error(message, at: location))
    }

    /// Appends diagnostics of any severity, keeping their order.
    public mutating func append(contentsOf other: [Diagnostic]) { diagnostics.append(contentsOf: other) }

    /// Whether any diagnostic is an error; warnings alone do not count.
    public var hasErrors: Bool { diagnostics.contains { $0.severity == .error } }

    /// - Throws: `DiagnosticError` with every diagnostic in the bag (warnings too), sorted by
    /// location, when at least one is an error; nothing otherwise.
    public func throwIfErrors() throws {
        if hasErrors { throw DiagnosticError(diagnostics) }
    }
}

/// Suggestions for near-miss names: `did you mean 'float'?`.
public enum Suggest {
    /// The closest candidate within an edit distance that grows with the word's length.
    public static func closest(to word: String, in candidates: some Sequence<String>) -> String? {
        let lowered = word.lowercased()
        var best: (String, Int)?
        for candidate in candidates {
            let d = distance(lowered, candidate.lowercased())
            let limit = max(1, min(3, candidate.count / 3 + 1))
            // `b` -> `a` replaces the whole word: that is a different name, not a typo.
            if d <= limit, d < candidate.count, d < (best?.1 ?? Int.max) { best = (candidate, d) }
        }
        return best?.0
    }

    /// ` (did you mean 'x'?)` or the empty string.
    public static func hint(for word: String, in candidates: some Sequence<String>) -> String {
        guard let match = closest(to: word, in: candidates), match != word else { return "" }
        return " (did you mean '\(match)'?)"
    }

    /// Levenshtein distance, with a transposition counted as one edit.
    static func distance(_ a: String, _ b: String) -> Int {
        let a = Array(a.unicodeScalars)
        let b = Array(b.unicodeScalars)
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var prev2 = [Int](repeating: 0, count: b.count + 1)
        var prev = Array(0...b.count)
        var cur = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            cur[0] = i
            for j in 1...b.count {
                let cost = a[i - 1] == b[j - 1] ? 0 : 1
                cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
                if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] {
                    cur[j] = min(cur[j], prev2[j - 2] + 1)
                }
            }
            (prev2, prev, cur) = (prev, cur, prev2)
        }
        return prev[b.count]
    }
}
