#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CofferCore

/// The repository objects' writer (docs/REPOSITORY-OBJECTS.md) is the package's one
/// ``ByteWriter``, with the objects' ids as a field type; `bytes16` of that document is
/// ``ByteWriter/lp16(_:)``.
typealias WireWriter = ByteWriter

extension ByteWriter {
    mutating func id(_ c: ChunkID) { c.withUnsafeBytes { raw($0) } }
    mutating func id(_ o: ObjectID) { o.withUnsafeBytes { raw($0) } }
    /// u16 length, then the UTF-8 bytes.
    mutating func string16(_ s: String) { lp16(Array(s.utf8)) }
}

/// The repository objects' reader: ``ByteReader`` over the decrypted object, where running out
/// of bytes, a bad id, invalid UTF-8, a bad magic or trailing bytes are a `WireError` naming the object.
struct WireReader {
    private var r: ByteReader<[UInt8]>
    let what: String

    init(_ bytes: [UInt8], what: String) {
        self.r = ByteReader(bytes)
        self.what = what
    }

    var remaining: Int { r.remaining }
    var atEnd: Bool { r.atEnd }

    func fail(_ message: String) -> WireError { WireError(message: "\(what): \(message)") }

    private func need<T>(_ value: T?) throws(WireError) -> T {
        guard let value else { throw fail("truncated at byte \(r.offset)") }
        return value
    }

    mutating func take(_ n: Int) throws(WireError) -> ArraySlice<UInt8> { try need(r.take(n)) }
    mutating func u8() throws(WireError) -> UInt8 { try need(r.u8()) }
    mutating func u16() throws(WireError) -> UInt16 { try need(r.u16()) }
    mutating func u32() throws(WireError) -> UInt32 { try need(r.u32()) }
    mutating func u64() throws(WireError) -> UInt64 { try need(r.u64()) }
    mutating func i64() throws(WireError) -> Int64 { try need(r.i64()) }
    mutating func chunkID() throws(WireError) -> ChunkID {
        let s = try take(32)
        do { return try ChunkID(bytes: Array(s)) } catch { throw fail("bad id") }
    }
    mutating func objectID() throws(WireError) -> ObjectID {
        let s = try take(32)
        do { return try ObjectID(bytes: Array(s)) } catch { throw fail("bad id") }
    }
    mutating func bytes16() throws(WireError) -> [UInt8] { Array(try need(r.lp16())) }
    mutating func string16() throws(WireError) -> String {
        let b = try bytes16()
        guard let s = String(validating: b, as: UTF8.self) else { throw fail("invalid UTF-8 string") }
        return s
    }
    mutating func expectMagic(_ magic: String, version: UInt16) throws(WireError) {
        _ = try expectMagic(magic, versions: version...version)
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
