#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CofferCore

/// Why bytes from the wire (or a file) were not accepted. Never carries the bytes themselves.
public enum WireError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The input ended before a field of `field` was complete.
    case truncated(field: String)
    /// Bytes remained after the last field (padding that is not all zeros counts too).
    case trailingBytes(count: Int)
    /// A length-prefixed field would exceed 65535 bytes, or a field exceeds its own limit.
    case oversize(field: String, length: Int)
    /// The leading type byte is not the one this decoder expects.
    case unexpectedType(expected: UInt8, found: UInt8)
    /// A field holds a value outside its allowed set.
    case invalidValue(field: String)
    /// The padded message is not exactly the fixed size for its type.
    case wrongPaddedSize(expected: Int, found: Int)

    public var description: String {
        switch self {
        case .truncated(let field): return "malformed vault message: input ends inside \(field)"
        case .trailingBytes(let n): return "malformed vault message: \(n) unexpected bytes after the last field"
        case .oversize(let field, let n): return "malformed vault message: \(field) is \(n) bytes, over its limit"
        case .unexpectedType(let e, let f): return "malformed vault message: type 0x\(String(e, radix: 16)) expected, 0x\(String(f, radix: 16)) found"
        case .invalidValue(let field): return "malformed vault message: invalid \(field)"
        case .wrongPaddedSize(let e, let f): return "malformed vault message: padded size \(f), expected \(e)"
        }
    }
}

/// The vault's canonical encodings are written with the package's one big-endian writer
/// (``ByteWriter``): fixed-length fields back to back (`u8`, `raw`, `u16`...), variable ones as
/// `lp(x)` (below, which refuses over 65535 bytes with the field's name).
typealias WireWriter = ByteWriter

extension ByteWriter {
    /// `lp(x)`: 2-byte big-endian length, then the bytes. Over 65535 bytes is rejected.
    mutating func lp(_ data: some Collection<UInt8>, field: String = "field") throws(WireError) {
        guard data.count <= 0xFFFF else { throw .oversize(field: field, length: data.count) }
        lp16(data)
    }
}

/// `lp(x)` as a free function, for derivation inputs. Traps on over 65535 bytes; callers bound
/// their inputs first (tenant and user come from validated tokens or configuration).
public func lp<C: Collection>(_ data: C) -> [UInt8] where C.Element == UInt8 {
    var w = ByteWriter(capacity: data.count + 2)
    w.lp16(data)
    return w.bytes
}

/// Reads a canonical encoding strictly with the package's ``ByteReader``: every read names its
/// field in the `WireError` when the input ends inside it, and `finish()` rejects anything left over.
struct WireReader: Sendable {
    private var r: ByteReader<[UInt8]>

    init<C: Collection>(_ data: C) where C.Element == UInt8 { r = ByteReader(Array(data)) }

    var remaining: Int { r.remaining }
    var offset: Int { r.offset }

    private static func need<T>(_ value: T?, _ field: String) throws(WireError) -> T {
        guard let value else { throw .truncated(field: field) }
        return value
    }

    mutating func byte(_ field: String) throws(WireError) -> UInt8 { try Self.need(r.u8(), field) }

    mutating func fixed(_ count: Int, _ field: String) throws(WireError) -> [UInt8] { Array(try Self.need(r.take(count), field)) }

    mutating func lp(_ field: String, max: Int = 0xFFFF) throws(WireError) -> [UInt8] {
        let n = Int(try uint16(field))
        guard n <= max else { throw .oversize(field: field, length: n) }
        return try fixed(n, field)
    }

    mutating func uint16(_ field: String) throws(WireError) -> UInt16 { try Self.need(r.u16(), field) }
    mutating func uint32(_ field: String) throws(WireError) -> UInt32 { try Self.need(r.u32(), field) }
    mutating func uint64(_ field: String) throws(WireError) -> UInt64 { try Self.need(r.u64(), field) }

    /// The encoding must end exactly here.
    func finish() throws(WireError) {
        guard r.atEnd else { throw .trailingBytes(count: remaining) }
    }

    /// The rest must be zero padding (strict: a non-zero byte is trailing data).
    func finishPadding() throws(WireError) {
        guard r.restIsZero() else { throw .trailingBytes(count: remaining) }
    }
}
