#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CofferCore

/// Big-endian writer for the repository objects (docs/REPOSITORY-OBJECTS.md).
struct WireWriter {
    var bytes: [UInt8] = []

    init(capacity: Int = 256) { bytes.reserveCapacity(capacity) }

    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.bigEndian) { bytes.append(contentsOf: $0) } }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.bigEndian) { bytes.append(contentsOf: $0) } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.bigEndian) { bytes.append(contentsOf: $0) } }
    mutating func i64(_ v: Int64) { u64(UInt64(bitPattern: v)) }
    mutating func raw(_ b: some Sequence<UInt8>) { bytes.append(contentsOf: b) }
    mutating func id(_ c: ChunkID) { c.withUnsafeBytes { bytes.append(contentsOf: $0) } }
    mutating func id(_ o: ObjectID) { o.withUnsafeBytes { bytes.append(contentsOf: $0) } }
    /// u16 length, then the bytes.
    mutating func bytes16(_ b: [UInt8]) {
        precondition(b.count <= Int(UInt16.max))
        u16(UInt16(b.count))
        raw(b)
    }
    /// u32 length, then the bytes.
    mutating func bytes32(_ b: [UInt8]) {
        u32(UInt32(b.count))
        raw(b)
    }
    mutating func string16(_ s: String) { bytes16(Array(s.utf8)) }
}

/// Bounds-checked big-endian reader; every failure is `WireError` (the object is malformed).
struct WireReader {
    let bytes: [UInt8]
    private(set) var offset = 0
    let what: String

    init(_ bytes: [UInt8], what: String) {
        self.bytes = bytes
        self.what = what
    }

    var remaining: Int { bytes.count - offset }
    var atEnd: Bool { offset == bytes.count }

    func fail(_ message: String) -> WireError { WireError(message: "\(what): \(message)") }

    mutating func take(_ n: Int) throws(WireError) -> ArraySlice<UInt8> {
        guard n >= 0, remaining >= n else { throw fail("truncated at byte \(offset)") }
        defer { offset += n }
        return bytes[offset..<offset + n]
    }

    mutating func u8() throws(WireError) -> UInt8 { try take(1).first! }
    mutating func u16() throws(WireError) -> UInt16 {
        let s = try take(2)
        return s.reduce(0) { $0 << 8 | UInt16($1) }
    }
    mutating func u32() throws(WireError) -> UInt32 {
        let s = try take(4)
        return s.reduce(0) { $0 << 8 | UInt32($1) }
    }
    mutating func u64() throws(WireError) -> UInt64 {
        let s = try take(8)
        return s.reduce(0) { $0 << 8 | UInt64($1) }
    }
    mutating func i64() throws(WireError) -> Int64 { Int64(bitPattern: try u64()) }
    mutating func chunkID() throws(WireError) -> ChunkID {
        let s = try take(32)
        do { return try ChunkID(bytes: Array(s)) } catch { throw fail("bad id") }
    }
    mutating func objectID() throws(WireError) -> ObjectID {
        let s = try take(32)
        do { return try ObjectID(bytes: Array(s)) } catch { throw fail("bad id") }
    }
    mutating func bytes16() throws(WireError) -> [UInt8] { Array(try take(Int(try u16()))) }
    mutating func bytes32() throws(WireError) -> [UInt8] { Array(try take(Int(try u32()))) }
    mutating func string16() throws(WireError) -> String {
        let b = try bytes16()
        guard let s = String(validating: b, as: UTF8.self) else { throw fail("invalid UTF-8 string") }
        return s
    }
    mutating func expectMagic(_ magic: String, version: UInt16) throws(WireError) {
        guard Array(try take(4)) == Array(magic.utf8) else { throw fail("bad magic (not a \(magic) object)") }
        let v = try u16()
        guard v == version else { throw fail("unsupported version \(v)") }
        let flags = try u16()
        guard flags == 0 else { throw fail("unknown flags \(flags)") }
    }
    /// Like `expectMagic(_:version:)` for objects whose readers accept several versions; returns the version.
    mutating func expectMagic(_ magic: String, versions: ClosedRange<UInt16>) throws(WireError) -> UInt16 {
        guard Array(try take(4)) == Array(magic.utf8) else { throw fail("bad magic (not a \(magic) object)") }
        let v = try u16()
        guard versions.contains(v) else { throw fail("unsupported version \(v)") }
        let flags = try u16()
        guard flags == 0 else { throw fail("unknown flags \(flags)") }
        return v
    }
    func expectEnd() throws(WireError) {
        guard atEnd else { throw fail("\(remaining) trailing bytes") }
    }
}

/// A repository object decrypted fine but does not parse: damage by someone holding the key, or a bug.
struct WireError: Error, Sendable, CustomStringConvertible {
    var message: String
    var description: String { message }
}

extension ObjectID {
    /// Storage name of a pack: `data/<first two hex digits>/<64 hex digits>`.
    var packName: String { "data/\(hex.prefix(2))/\(hex)" }
    var indexName: String { "index/\(hex)" }
    var snapshotName: String { "snapshots/\(hex)" }
    var markName: String { "marks/\(hex)" }
}

extension SealedObjectType {
    /// Prune's pending-deletion marks (docs/REPOSITORY-OBJECTS.md).
    static let pruneMark = SealedObjectType(rawValue: 6)
}
