import Foundation

/// A content fingerprint of a file: two independent 64-bit FNV-1a-style lanes over 8-byte words,
/// plus the length. Not cryptographic; it tells one file's content from another's.
public enum Fingerprint {
    public static func ofFile(atPath path: String) throws -> String {
        guard let handle = FileHandle(forReadingAtPath: path) else { throw CSVError(message: "\(path): no such file") }
        defer { try? handle.close() }
        var state = State()
        while true {
            let data = handle.readData(ofLength: 1 << 20)
            if data.isEmpty { break }
            data.withUnsafeBytes { state.update(UnsafeRawBufferPointer($0)) }
        }
        return state.hex
    }

    public static func of(bytes: [UInt8]) -> String {
        var state = State()
        bytes.withUnsafeBytes { state.update($0) }
        return state.hex
    }

    struct State {
        var a: UInt64 = 0xcbf2_9ce4_8422_2325
        var b: UInt64 = 0x8422_2325_cbf2_9ce4 ^ 0x9E37_79B9_7F4A_7C15
        var length: UInt64 = 0
        var tail: [UInt8] = []

        mutating func mix(_ w: UInt64) {
            a = (a ^ w) &* 0x0000_0100_0000_01B3
            a ^= a >> 29
            b = (b ^ (w &* 0x9E37_79B9_7F4A_7C15)) &* 0xBF58_476D_1CE4_E5B9
            b ^= b >> 31
        }

        mutating func update(_ bytes: UnsafeRawBufferPointer) {
            length &+= UInt64(bytes.count)
            var i = 0
            if !tail.isEmpty {
                while tail.count < 8, i < bytes.count { tail.append(bytes[i]); i += 1 }
                if tail.count == 8 {
                    mix(tail.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
                    tail.removeAll()
                }
            }
            while i + 8 <= bytes.count {
                mix(bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self))
                i += 8
            }
            while i < bytes.count { tail.append(bytes[i]); i += 1 }
        }

        var hex: String {
            var s = self
            var last: UInt64 = 0
            for (k, byte) in s.tail.enumerated() { last |= UInt64(byte) << (8 * UInt64(k)) }
            s.mix(last ^ 0xFF)
            s.mix(length)
            return String(format: "%016llx%016llx", s.a, s.b)
        }
    }
}
