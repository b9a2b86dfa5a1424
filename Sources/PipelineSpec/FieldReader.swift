/// Reads the fields of one YAML mapping, reporting wrong types, missing required fields and
/// unknown keys (with `did you mean`) into a shared diagnostic bag.
struct FieldReader {
    let pairs: [(key: Located<String>, value: YAMLTree)]
    let location: SourceLocation
    /// "source 'housing_csv'": names the thing in messages.
    let context: String
    let allowed: [String]

    init?(_ tree: YAMLTree, context: String, allowed: [String], bag: inout DiagnosticBag) {
        guard case .mapping(let pairs, let location) = tree else {
            bag.error("\(context) must be a mapping, found \(tree.kindName)", at: tree.location)
            return nil
        }
        self.pairs = pairs
        self.location = location
        self.context = context
        self.allowed = allowed
        for pair in pairs where !allowed.contains(pair.key.value) {
            // `{ type: numeric(10,2) }`: the comma ends the value in a flow mapping.
            let hint =
                pair.key.value.hasSuffix(")") && !pair.key.value.contains("(")
                ? "; inside { } a value with a comma must be quoted, e.g. type: \"numeric(10,2)\""
                : Suggest.hint(for: pair.key.value, in: allowed)
            // The key may be a whole line of some other file: show a short, escaped excerpt.
            bag.error("unknown key '\(Excerpt.quoted(pair.key.value))' in \(context)\(hint)", at: pair.key.location)
        }
    }

    /// Whether `tree` is a mapping with at least one of `keys`: tells a file of the expected
    /// kind with mistakes in it from a file of another kind altogether.
    static func looksLike(_ tree: YAMLTree, anyOf keys: [String]) -> Bool {
        guard case .mapping(let pairs, _) = tree else { return false }
        return pairs.contains { keys.contains($0.key.value) }
    }

    subscript(key: String) -> YAMLTree? {
        guard let value = pairs.first(where: { $0.key.value == key })?.value else { return nil }
        if case .scalar(_, true, _) = value { return nil }  // `key:` with no value reads as absent
        return value
    }

    func keyLocation(_ key: String) -> SourceLocation? {
        pairs.first(where: { $0.key.value == key })?.key.location
    }

    func missing(_ key: String, bag: inout DiagnosticBag) {
        bag.error("missing required field '\(key)' in \(context)", at: location)
    }

    func string(_ key: String, required: Bool = false, bag: inout DiagnosticBag) -> Located<String>? {
        guard let tree = self[key] else {
            if required { missing(key, bag: &bag) }
            return nil
        }
        guard case .scalar(let text, _, let loc) = tree else {
            bag.error("'\(key)' in \(context) must be a string, found \(tree.kindName)", at: tree.location)
            return nil
        }
        return Located(text, at: loc)
    }

    /// A string where YAML's null words are meant as text (`on_error: null`, `null: NULL`);
    /// only an empty value reads as absent.
    func literalString(_ key: String, bag: inout DiagnosticBag) -> Located<String>? {
        if case .scalar(let text, true, let loc)? = pairs.first(where: { $0.key.value == key })?.value, !text.isEmpty {
            return Located(text, at: loc)
        }
        return string(key, bag: &bag)
    }

    func int(_ key: String, min: Int = Int.min, bag: inout DiagnosticBag) -> Located<Int>? {
        guard let s = string(key, bag: &bag) else { return nil }
        guard let v = Int(s.value.replacingOccurrences(of: "_", with: "")) else {
            bag.error("'\(key)' in \(context) must be a whole number, found '\(s.value)'", at: s.location)
            return nil
        }
        guard v >= min else {
            bag.error("'\(key)' in \(context) must be at least \(min), found \(v)", at: s.location)
            return nil
        }
        return Located(v, at: s.location)
    }

    func double(_ key: String, bag: inout DiagnosticBag) -> Located<Double>? {
        guard let s = string(key, bag: &bag) else { return nil }
        guard let v = Double(s.value), v.isFinite, v > 0 else {
            bag.error("'\(key)' in \(context) must be a positive number, found '\(s.value)'", at: s.location)
            return nil
        }
        return Located(v, at: s.location)
    }

    func bool(_ key: String, bag: inout DiagnosticBag) -> Located<Bool>? {
        guard let s = string(key, bag: &bag) else { return nil }
        switch s.value.lowercased() {
        case "true", "yes", "on": return Located(true, at: s.location)
        case "false", "no", "off": return Located(false, at: s.location)
        default:
            bag.error("'\(key)' in \(context) must be true or false, found '\(s.value)'", at: s.location)
            return nil
        }
    }

    /// A list of strings; a single string is read as a list of one.
    func strings(_ key: String, bag: inout DiagnosticBag) -> [Located<String>] {
        guard let tree = self[key] else { return [] }
        switch tree {
        case .scalar(let text, _, let loc):
            return [Located(text, at: loc)]
        case .sequence(let items, _):
            return items.compactMap { item in
                guard case .scalar(let text, _, let loc) = item else {
                    bag.error("'\(key)' in \(context) must list strings, found \(item.kindName)", at: item.location)
                    return nil
                }
                return Located(text, at: loc)
            }
        case .mapping:
            bag.error("'\(key)' in \(context) must be a list of strings, found a mapping", at: tree.location)
            return []
        }
    }

    /// A mapping of strings to strings, in file order.
    func stringMap(_ key: String, bag: inout DiagnosticBag) -> [(key: Located<String>, value: Located<String>)] {
        guard let tree = self[key] else { return [] }
        guard case .mapping(let pairs, _) = tree else {
            bag.error("'\(key)' in \(context) must be a mapping, found \(tree.kindName)", at: tree.location)
            return []
        }
        return pairs.compactMap { pair in
            guard case .scalar(let text, _, let loc) = pair.value else {
                bag.error(
                    "'\(pair.key.value)' under '\(key)' in \(context) must be a string, found \(pair.value.kindName)",
                    at: pair.value.location)
                return nil
            }
            return (pair.key, Located(text, at: loc))
        }
    }

    /// The items of a list field (`sources:`); absence is an empty list.
    func list(_ key: String, bag: inout DiagnosticBag) -> [YAMLTree] {
        guard let tree = self[key] else { return [] }
        guard case .sequence(let items, _) = tree else {
            bag.error("'\(key)' in \(context) must be a list, found \(tree.kindName)", at: tree.location)
            return []
        }
        return items
    }
}
