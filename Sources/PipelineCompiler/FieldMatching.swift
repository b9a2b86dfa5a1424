import RecordFormats

/// The one rule that decides which record field fills which column, used by the compiler (to
/// check a spec against a CSV header), the producer (message keys) and the consumer (decoding):
///
/// 1. a field fills the column whose name is exactly the field's name;
/// 2. else the column whose name equals the field's *normalised* name (lower case, every run of
///    other characters as `_`: `Order Date` -> `order_date`, `UserId` -> `userid`).
///
/// So a schema may spell columns as the header does (`Order Date`, `Größe`, `名前`) or in the
/// normalised form (`order_date`) that `pipectl init` writes. Messages keep the header's exact
/// spelling; renames and drops name fields by either spelling too.
public enum FieldMatching {
    /// Fields the producer adds to every message; a CSV header cell of the same name is renamed
    /// (`_record` -> `_record_2`) so it cannot be mistaken for them.
    public static let reserved: Set<String> = ["_record", "_sent_at", "_error", "_line", "_raw_b64"]

    /// The JSON field names of a CSV header: each cell as written, except that an empty cell
    /// becomes `column_N` (N its 1-based position) and a repeated or reserved name gets `_2`,
    /// `_3`, ... (`price,price` -> `price`, `price_2`).
    ///
    ///     UserId,Order Date,Größe,,price,price  ->  UserId, Order Date, Größe, column_4, price, price_2
    public static func fieldNames(header cells: [String]) -> [String] {
        var used = reserved
        var names: [String] = []
        for (i, cell) in cells.enumerated() {
            let base = cell.isEmpty ? "column_\(i + 1)" : cell
            var name = base
            var n = 1
            while used.contains(name) {
                n += 1
                name = "\(base)_\(n)"
            }
            used.insert(name)
            names.append(name)
        }
        return names
    }

    /// The normalised form of one field name (`Order Date` -> `order_date`), the spelling
    /// `pipectl init` gives columns. Within a header, use `normalized(header:)`, which also
    /// numbers empty and repeated names the way `init` does.
    public static func normalized(_ name: String) -> String {
        CSVReader.normalizeHeader([name])[0]
    }

    /// The normalised forms of a whole header, position by position.
    public static func normalized(header cells: [String]) -> [String] {
        CSVReader.normalizeHeader(cells)
    }

    /// The index of the field `wanted` names: the field of exactly that name, else the first
    /// whose normalised form is `wanted`; nil when neither exists.
    public static func index(of wanted: String, in fields: [String], normalized: [String]) -> Int? {
        if let exact = fields.firstIndex(of: wanted) { return exact }
        return normalized.firstIndex(of: wanted)
    }
}

/// What a transform does with record fields that no column takes (`on_unknown_field:`).
public enum UnknownFieldPolicy: String, Sendable, Codable, CaseIterable {
    /// Say nothing.
    case ignore
    /// One warning naming them (the default).
    case warn
    /// A compile error naming them: the spec must `drop` them or give them a column.
    case error
}
