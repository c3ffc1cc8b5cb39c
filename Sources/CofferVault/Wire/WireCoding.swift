#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

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

/// Builds a canonical encoding: fixed-length fields back to back, variable ones as `lp(x)`.
public struct WireWriter: Sendable {
    public private(set) var bytes: [UInt8] = []

    public init() {}

    public mutating func byte(_ b: UInt8) { bytes.append(b) }

    /// A fixed-length field; the caller guarantees the length (types enforce it).
    public mutating func fixed<C: Collection>(_ data: C) where C.Element == UInt8 { bytes.append(contentsOf: data) }

    /// `lp(x)`: 2-byte big-endian length, then the bytes. Over 65535 bytes is rejected.
    public mutating func lp<C: Collection>(_ data: C, field: String = "field") throws(WireError) where C.Element == UInt8 {
        guard data.count <= 0xFFFF else { throw .oversize(field: field, length: data.count) }
        bytes.append(UInt8(data.count >> 8))
        bytes.append(UInt8(data.count & 0xFF))
        bytes.append(contentsOf: data)
    }

    public mutating func uint16(_ v: UInt16) {
        bytes.append(UInt8(v >> 8))
        bytes.append(UInt8(v & 0xFF))
    }

    public mutating func uint32(_ v: UInt32) {
        for shift in stride(from: 24, through: 0, by: -8) { bytes.append(UInt8((v >> UInt32(shift)) & 0xFF)) }
    }

    public mutating func uint64(_ v: UInt64) {
        for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8((v >> UInt64(shift)) & 0xFF)) }
    }
}

/// `lp(x)` as a free function, for derivation inputs. Traps on over 65535 bytes; callers bound
/// their inputs first (tenant and user come from validated tokens or configuration).
public func lp<C: Collection>(_ data: C) -> [UInt8] where C.Element == UInt8 {
    precondition(data.count <= 0xFFFF, "lp() input over 65535 bytes")
    return [UInt8(data.count >> 8), UInt8(data.count & 0xFF)] + Array(data)
}

/// Reads a canonical encoding strictly: every read checks the remaining length, and `finish()`
/// rejects anything left over.
public struct WireReader: Sendable {
    private let bytes: [UInt8]
    public private(set) var offset: Int = 0

    public init<C: Collection>(_ data: C) where C.Element == UInt8 { bytes = Array(data) }

    public var remaining: Int { bytes.count - offset }

    public mutating func byte(_ field: String) throws(WireError) -> UInt8 {
        guard remaining >= 1 else { throw .truncated(field: field) }
        defer { offset += 1 }
        return bytes[offset]
    }

    public mutating func fixed(_ count: Int, _ field: String) throws(WireError) -> [UInt8] {
        guard remaining >= count else { throw .truncated(field: field) }
        defer { offset += count }
        return Array(bytes[offset..<offset + count])
    }

    public mutating func lp(_ field: String, max: Int = 0xFFFF) throws(WireError) -> [UInt8] {
        let hi = try byte(field), lo = try byte(field)
        let n = Int(hi) << 8 | Int(lo)
        guard n <= max else { throw .oversize(field: field, length: n) }
        return try fixed(n, field)
    }

    public mutating func uint16(_ field: String) throws(WireError) -> UInt16 {
        let b = try fixed(2, field)
        return UInt16(b[0]) << 8 | UInt16(b[1])
    }

    public mutating func uint32(_ field: String) throws(WireError) -> UInt32 {
        let b = try fixed(4, field)
        return b.reduce(0) { $0 << 8 | UInt32($1) }
    }

    public mutating func uint64(_ field: String) throws(WireError) -> UInt64 {
        let b = try fixed(8, field)
        return b.reduce(0) { $0 << 8 | UInt64($1) }
    }

    /// The encoding must end exactly here.
    public func finish() throws(WireError) {
        guard remaining == 0 else { throw .trailingBytes(count: remaining) }
    }

    /// The rest must be zero padding (strict: a non-zero byte is trailing data).
    public func finishPadding() throws(WireError) {
        var nonZero = 0
        for i in offset..<bytes.count where bytes[i] != 0 { nonZero += 1 }
        guard nonZero == 0 else { throw .trailingBytes(count: remaining) }
    }
}

