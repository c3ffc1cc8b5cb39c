#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The package's one big-endian codec: every multi-byte integer Coffer writes is big-endian (the
/// repository format, docs/FORMAT.md; the vault's wire format, docs/VAULT.md; the realm's storage
/// encodings). The repository objects, the vault messages and the realm's rows write with this
/// writer and read with ``ByteReader``; each adds only its own field types and error messages.
/// `package`: for Coffer's own modules, not part of the API.
package struct ByteWriter: Sendable {
    package var bytes: [UInt8]

    @inlinable package init(capacity: Int = 64) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    @inlinable package mutating func u8(_ v: UInt8) { bytes.append(v) }
    @inlinable package mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.bigEndian) { bytes.append(contentsOf: $0) } }
    @inlinable package mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.bigEndian) { bytes.append(contentsOf: $0) } }
    @inlinable package mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.bigEndian) { bytes.append(contentsOf: $0) } }
    /// Two's complement, as `u64` of its bit pattern.
    @inlinable package mutating func i64(_ v: Int64) { u64(UInt64(bitPattern: v)) }
    @inlinable package mutating func raw(_ b: some Sequence<UInt8>) { bytes.append(contentsOf: b) }
    @inlinable package mutating func raw(_ b: UnsafeRawBufferPointer) { bytes.append(contentsOf: b) }

    /// `lp(x)` of the vault and the realm, `bytes16` of the repository objects: a u16 length, then
    /// the bytes. The caller bounds the length first (a longer field is a programming error: traps).
    @inlinable package mutating func lp16(_ b: some Collection<UInt8>) {
        precondition(b.count <= Int(UInt16.max), "a u16-length field of \(b.count) bytes")
        u16(UInt16(b.count))
        raw(b)
    }

    /// Padding can be megabytes: appended from a zero block by bulk copies, not byte by byte (which
    /// unoptimized builds do for a generic `repeatElement`: seconds per backup in debug builds).
    package mutating func zeros(_ n: Int) {
        var left = n
        while left > 0 {
            let k = min(left, Self.zeroBlock.count)
            Self.zeroBlock.withUnsafeBytes { bytes.append(contentsOf: UnsafeRawBufferPointer(rebasing: $0[0..<k])) }
            left -= k
        }
    }

    private static let zeroBlock = [UInt8](repeating: 0, count: 64 << 10)
}

/// The reader of ``ByteWriter``'s encodings, over any contiguous bytes indexed by `Int` (a raw
/// buffer without copying, `[UInt8]`, `Data`). Every read is bounds-checked and returns `nil`
/// past the end without moving, so truncated input can never trap; the modules turn `nil` into
/// their own errors (which field, which object).
package struct ByteReader<Bytes: RandomAccessCollection> where Bytes.Element == UInt8, Bytes.Index == Int {
    package let buffer: Bytes
    /// Bytes read so far (from the buffer's start index).
    package private(set) var offset: Int = 0

    @inlinable package init(_ buffer: Bytes) { self.buffer = buffer }

    @inlinable package var remaining: Int { buffer.count - offset }
    @inlinable package var atEnd: Bool { remaining == 0 }

    @inlinable package mutating func u8() -> UInt8? {
        guard remaining >= 1 else { return nil }
        defer { offset += 1 }
        return buffer[buffer.startIndex + offset]
    }
    @inlinable package mutating func u16() -> UInt16? { integer(UInt16.self) }
    @inlinable package mutating func u32() -> UInt32? { integer(UInt32.self) }
    @inlinable package mutating func u64() -> UInt64? { integer(UInt64.self) }
    @inlinable package mutating func i64() -> Int64? { integer(UInt64.self).map { Int64(bitPattern: $0) } }

    /// The next `n` bytes, as a slice of the buffer (no copy).
    @inlinable package mutating func take(_ n: Int) -> Bytes.SubSequence? {
        guard n >= 0, remaining >= n else { return nil }
        let start = buffer.startIndex + offset
        offset += n
        return buffer[start..<start + n]
    }

    /// A u16 length, then that many bytes (``ByteWriter/lp16(_:)``); nothing is consumed when
    /// either part is missing.
    @inlinable package mutating func lp16() -> Bytes.SubSequence? {
        let saved = offset
        guard let n = u16(), let b = take(Int(n)) else { offset = saved; return nil }
        return b
    }

    /// Whether every byte left is zero (padding; not secret). Consumes nothing.
    @inlinable package func restIsZero() -> Bool {
        var i = buffer.startIndex + offset
        while i < buffer.endIndex {
            if buffer[i] != 0 { return false }
            i += 1
        }
        return true
    }

    @inlinable
    mutating func integer<T: FixedWidthInteger & UnsignedInteger>(_: T.Type) -> T? {
        let n = MemoryLayout<T>.size
        guard remaining >= n else { return nil }
        let start = buffer.startIndex + offset
        var v: T = 0
        for i in start..<start + n { v = v << 8 | T(buffer[i]) }
        offset += n
        return v
    }
}

extension ByteReader: Sendable where Bytes: Sendable {}

extension ByteReader where Bytes == UnsafeRawBufferPointer {
    /// ``take(_:)`` as a raw buffer (the format's readers in CofferCore work on raw buffers).
    @inlinable package mutating func bytes(_ n: Int) -> UnsafeRawBufferPointer? {
        take(n).map { UnsafeRawBufferPointer(rebasing: $0) }
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
