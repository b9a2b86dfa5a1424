import RecordFormats

extension SQLType {
    /// The type `ValueCaster` (RecordFormats) casts a value of this column type to.
    @inlinable
    public var castTarget: CastTarget {
        switch self {
        case .smallint: return .smallint
        case .integer, .serial: return .integer
        case .bigint, .bigserial: return .bigint
        case .real: return .real
        case .doublePrecision: return .doublePrecision
        case .numeric(let p, let s): return .numeric(precision: p, scale: s)
        case .boolean: return .boolean
        case .text: return .text
        case .varchar(let n): return .varchar(n)
        case .date: return .date
        case .timestamp: return .timestamp
        case .timestamptz: return .timestamptz
        case .json, .jsonb: return .json
        }
    }
}

extension ValueCaster {
    /// `append(_:castingTo:dateOrder:to:)` for a spec's column type: validates `value` as
    /// `type` and appends its escaped COPY text to `out`; on failure nothing is appended.
    /// Inlinable so the per-cell call stays one call on the hot path.
    @inlinable
    public static func append(
        _ value: UnsafeBufferPointer<UInt8>, as type: SQLType, dateOrder: DateOrder = .mdy,
        to out: inout [UInt8]
    ) -> CastError? {
        append(value, castingTo: type.castTarget, dateOrder: dateOrder, to: &out)
    }

    /// `cast(_:castingTo:dateOrder:)` for a spec's column type: the unescaped canonical text.
    @inlinable
    public static func cast(_ text: String, to type: SQLType, dateOrder: DateOrder = .mdy) -> Result<String, CastError> {
        cast(text, castingTo: type.castTarget, dateOrder: dateOrder)
    }
}
