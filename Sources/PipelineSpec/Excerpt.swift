/// Text from a file or a spec, made safe to show in a diagnostic, a comment or a terminal.
///
/// A spec may name any file (a schema path like `../../etc/shadow`) and any text can sit in a
/// key or a name, so messages never echo it raw: control characters and every character YAML,
/// SQL comments or a terminal treat as a line break are escaped, and long text is cut short.
public enum Excerpt {
    /// How many characters of someone else's text a diagnostic shows at most.
    public static let maxCharacters = 40

    /// `root:*:19000:0:99999:7:::` -> `root:*:19000:0:99999:7:::`; `a\u{2028}b` -> `a\u2028b`;
    /// text longer than `limit` characters is cut and ends in `…`.
    public static func quoted(_ text: String, limit: Int = maxCharacters) -> String {
        var out = ""
        var count = 0
        for scalar in text.unicodeScalars {
            if count == limit {
                out += "…"
                break
            }
            out += escape(scalar)
            count += 1
        }
        return out
    }

    /// The whole text with every control or line-breaking character escaped (`\n`, `\r`, `\t`,
    /// `\u{85}` -> `\u0085`, U+2028, U+2029, C0, DEL and C1), nothing cut. For names that were
    /// already validated but are written where a line break would change the meaning.
    public static func escaped(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: isUnsafe) else { return text }
        return text.unicodeScalars.map(escape).joined()
    }

    /// C0 controls, DEL, C1 controls (U+0085 NEL is a line break to YAML; U+009B starts a
    /// terminal escape sequence), and the Unicode line and paragraph separators.
    public static func isUnsafe(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value) || scalar.value == 0x2028 || scalar.value == 0x2029
    }

    static func escape(_ scalar: Unicode.Scalar) -> String {
        guard isUnsafe(scalar) else { return String(scalar) }
        switch scalar {
        case "\n": return "\\n"
        case "\r": return "\\r"
        case "\t": return "\\t"
        default:
            let hex = String(scalar.value, radix: 16, uppercase: true)
            return "\\u" + String(repeating: "0", count: max(0, 4 - hex.count)) + hex
        }
    }
}
