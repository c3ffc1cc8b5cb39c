#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CofferCore

/// Why bytes from the wire (or a file) were not accepted: a ``Code``, a message and the field it
/// concerns. Never carries the bytes themselves. The same model as the other libraries' errors.
public struct WireError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What kind of failure this is: compare with `==` or switch with a `default:` (codes can be
    /// added in later versions without breaking callers).
    public struct Code: Sendable, Hashable, CaseIterable, CustomStringConvertible {
        private enum Base: String, Sendable, Hashable, CaseIterable {
            case truncated, trailingBytes, oversize, unexpectedType, invalidValue, wrongPaddedSize
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The input ended before ``WireError/field`` was complete.
        public static let truncated = Code(.truncated)
        /// ``WireError/count`` bytes remained after the last field (padding that is not all zeros counts too).
        public static let trailingBytes = Code(.trailingBytes)
        /// A length-prefixed field would exceed 65535 bytes, or ``WireError/field`` exceeds its own
        /// limit (``WireError/count`` bytes).
        public static let oversize = Code(.oversize)
        /// The leading type byte is not the one this decoder expects (``WireError/expected``, ``WireError/found``).
        public static let unexpectedType = Code(.unexpectedType)
        /// ``WireError/field`` holds a value outside its allowed set.
        public static let invalidValue = Code(.invalidValue)
        /// The padded message is not exactly the fixed size for its type (``WireError/expected``, ``WireError/found``).
        public static let wrongPaddedSize = Code(.wrongPaddedSize)

        public static var allCases: [Code] { Base.allCases.map(Code.init) }
        public var description: String { base.rawValue }
    }

    public var code: Code
    public var message: String
    /// The field concerned, where there is one.
    public var field: String?
    /// A length or count (trailing bytes, an oversize field's length).
    public var count: Int?
    /// With ``Code/unexpectedType`` the type byte expected, with ``Code/wrongPaddedSize`` the size.
    public var expected: Int?
    /// What was found instead.
    public var found: Int?

    private init(_ code: Code, _ message: String, field: String? = nil, count: Int? = nil, expected: Int? = nil, found: Int? = nil) {
        self.code = code
        self.message = "malformed vault message: " + message
        self.field = field
        self.count = count
        self.expected = expected
        self.found = found
    }

    public var description: String { message }

    public static func truncated(field: String) -> WireError {
        WireError(.truncated, "input ends inside \(field)", field: field)
    }

    public static func trailingBytes(count: Int) -> WireError {
        WireError(.trailingBytes, "\(count) unexpected bytes after the last field", count: count)
    }

    public static func oversize(field: String, length: Int) -> WireError {
        WireError(.oversize, "\(field) is \(length) bytes, over its limit", field: field, count: length)
    }

    public static func unexpectedType(expected: UInt8, found: UInt8) -> WireError {
        WireError(.unexpectedType, "type 0x\(String(expected, radix: 16)) expected, 0x\(String(found, radix: 16)) found",
                  expected: Int(expected), found: Int(found))
    }

    public static func invalidValue(field: String) -> WireError {
        WireError(.invalidValue, "invalid \(field)", field: field)
    }

    public static func wrongPaddedSize(expected: Int, found: Int) -> WireError {
        WireError(.wrongPaddedSize, "padded size \(found), expected \(expected)", expected: expected, found: found)
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
