#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Big-endian field writer over a growable byte array. Every multi-byte integer in the format is
/// big-endian (see docs/FORMAT.md).
struct ByteWriter {
    var bytes: [UInt8]

    init(capacity: Int = 64) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.bigEndian) { bytes.append(contentsOf: $0) } }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.bigEndian) { bytes.append(contentsOf: $0) } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.bigEndian) { bytes.append(contentsOf: $0) } }
    mutating func raw(_ b: some Sequence<UInt8>) { bytes.append(contentsOf: b) }
    mutating func raw(_ b: UnsafeRawBufferPointer) { bytes.append(contentsOf: b) }
    /// Padding can be megabytes: appended from a zero block by bulk copies, not byte by byte (which
    /// unoptimized builds do for a generic `repeatElement`: seconds per backup in debug builds).
    mutating func zeros(_ n: Int) {
        var left = n
        while left > 0 {
            let k = min(left, Self.zeroBlock.count)
            Self.zeroBlock.withUnsafeBytes { bytes.append(contentsOf: UnsafeRawBufferPointer(rebasing: $0[0..<k])) }
            left -= k
        }
    }

    private static let zeroBlock = [UInt8](repeating: 0, count: 64 << 10)
}

/// Big-endian field reader over a raw buffer; every read is bounds-checked and returns `nil` past
/// the end, so truncated input can never trap.
struct ByteReader {
    let buffer: UnsafeRawBufferPointer
    private(set) var offset: Int = 0

    init(_ buffer: UnsafeRawBufferPointer) { self.buffer = buffer }

    var remaining: Int { buffer.count - offset }

    mutating func u8() -> UInt8? {
        guard remaining >= 1 else { return nil }
        defer { offset += 1 }
        return buffer[offset]
    }
    mutating func u16() -> UInt16? {
        guard remaining >= 2 else { return nil }
        defer { offset += 2 }
        return UInt16(bigEndian: buffer.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }
    mutating func u32() -> UInt32? {
        guard remaining >= 4 else { return nil }
        defer { offset += 4 }
        return UInt32(bigEndian: buffer.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }
    mutating func u64() -> UInt64? {
        guard remaining >= 8 else { return nil }
        defer { offset += 8 }
        return UInt64(bigEndian: buffer.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
    }
    mutating func bytes(_ n: Int) -> UnsafeRawBufferPointer? {
        guard n >= 0, remaining >= n else { return nil }
        defer { offset += n }
        return UnsafeRawBufferPointer(rebasing: buffer[offset..<offset + n])
    }
}

/// Lowercase hex, the one encoder and decoder of the package (object names, ids, key digits,
/// SigV4 and Digest hashes, wire fields). `package`: for Coffer's own modules, not part of the API.
package enum Hex {
    private static let digits: [UInt8] = Array("0123456789abcdef".utf8)

    /// Two lowercase digits per byte.
    package static func string(_ bytes: UnsafeRawBufferPointer) -> String {
        digits.withUnsafeBufferPointer { table in
            String(unsafeUninitializedCapacity: bytes.count * 2) { out in
                for i in 0..<bytes.count {
                    let b = bytes[i]
                    out[2 * i] = table[Int(b >> 4)]
                    out[2 * i + 1] = table[Int(b & 0x0f)]
                }
                return bytes.count * 2
            }
        }
    }

    /// Two lowercase digits per byte, of any byte sequence (`[UInt8]`, `Data`, a digest).
    package static func string(_ bytes: some Sequence<UInt8>) -> String {
        if let s = bytes.withContiguousStorageIfAvailable({ string(UnsafeRawBufferPointer($0)) }) { return s }
        return Array(bytes).withUnsafeBytes { string($0) }
    }

    /// Strict: an even number of hex digits (either case), nothing else; `nil` otherwise.
    package static func bytes(_ string: String) -> [UInt8]? {
        let utf8 = Array(string.utf8)
        guard utf8.count % 2 == 0 else { return nil }
        var out = [UInt8]()
        out.reserveCapacity(utf8.count / 2)
        var i = 0
        while i < utf8.count {
            guard let h = nibble(utf8[i]), let l = nibble(utf8[i + 1]) else { return nil }
            out.append(h << 4 | l)
            i += 2
        }
        return out
    }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}

extension Sequence where Element == UInt8 {
    /// ``Hex/string(_:)-(some Sequence<UInt8>)`` of these bytes.
    package var hexString: String { Hex.string(self) }
}

extension Array where Element == UInt8 {
    /// ``Hex/bytes(_:)``: `nil` unless `hexString` is an even number of hex digits.
    package init?(hexString: String) {
        guard let b = Hex.bytes(hexString) else { return nil }
        self = b
    }
}

/// True when every byte is zero; used for padding and reserved fields (not secret).
func allZero(_ a: UnsafeRawBufferPointer) -> Bool {
    // Word at a time: padding may be megabytes (Part B).
    var acc: UInt64 = 0
    let words = a.count / 8
    for i in 0..<words { acc |= a.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self) }
    for i in (words * 8)..<a.count { acc |= UInt64(a[i]) }
    return acc == 0
}

extension ContiguousBytes {
    /// `withUnsafeBytes` that keeps a typed error (the protocol's version is untyped `rethrows`).
    func withRawBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        let result: Result<R, E> = withUnsafeBytes { raw in Result { () throws(E) -> R in try body(raw) } }
        return try result.get()
    }
}
