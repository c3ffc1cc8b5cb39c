#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CofferCore

/// One pack as an index lists it: enough to read any blob with one ranged read and no trailer.
struct IndexedPack: Sendable, Hashable {
    var id: ObjectID
    var salt: Data
    /// The pack's total size in bytes.
    var length: Int
    var entries: [PackEntry]
}

/// An index object (`index/<id>`, sealed type index): the packs written by one checkpoint, or a
/// whole new index written by prune, which then lists the index objects it replaces.
struct IndexFile: Sendable {
    static let magic = "CFIX"
    static let version: UInt16 = 1

    var supersedes: [ObjectID] = []
    var packs: [IndexedPack] = []

    /// Deterministic: packs sorted by id, superseded ids sorted, entries in pack order.
    func encoded() -> [UInt8] {
        var w = WireWriter(capacity: 16 + packs.reduce(0) { $0 + 72 + $1.entries.count * 52 })
        w.raw(Array(Self.magic.utf8))
        w.u16(Self.version)
        w.u16(0)
        let sup = supersedes.sorted()
        w.u32(UInt32(sup.count))
        for s in sup { w.id(s) }
        let sorted = packs.sorted { $0.id < $1.id }
        w.u32(UInt32(sorted.count))
        for p in sorted {
            w.id(p.id)
            w.raw(p.salt)
            w.u64(UInt64(p.length))
            w.u32(UInt32(p.entries.count))
            for e in p.entries {
                w.u8(e.type.rawValue)
                w.u8(e.compression.rawValue)
                w.u16(0)
                w.u32(UInt32(e.index))
                w.u32(UInt32(e.uncompressedLength))
                w.u32(UInt32(e.offset))
                w.u32(UInt32(e.length))
                w.id(e.id)
            }
        }
        return w.bytes
    }

    static func decode(_ bytes: [UInt8], what: String) throws(WireError) -> IndexFile {
        var r = WireReader(bytes, what: what)
        try r.expectMagic(magic, version: version)
        var out = IndexFile()
        let supCount = Int(try r.u32())
        guard supCount <= r.remaining / 32 else { throw r.fail("impossible count") }
        for _ in 0..<supCount { out.supersedes.append(try r.objectID()) }
        let packCount = Int(try r.u32())
        guard packCount <= r.remaining / 76 else { throw r.fail("impossible pack count") }
        out.packs.reserveCapacity(packCount)
        for _ in 0..<packCount {
            let id = try r.objectID()
            let salt = Data(try r.take(32))
            let rawLength = try r.u64()
            // Bounded before it becomes an Int: no pack is larger than the format allows.
            guard rawLength <= UInt64(PackFormat.maxPackLength) else { throw r.fail("impossible pack length \(rawLength)") }
            let length = Int(rawLength)
            let n = Int(try r.u32())
            guard n <= r.remaining / 52 else { throw r.fail("impossible blob count") }
            var entries: [PackEntry] = []
            entries.reserveCapacity(n)
            for _ in 0..<n {
                guard let type = BlobType(rawValue: try r.u8()) else { throw r.fail("unknown blob type") }
                guard let comp = Compression(rawValue: try r.u8()) else { throw r.fail("unknown compression") }
                guard try r.u16() == 0 else { throw r.fail("reserved field not zero") }
                let index = Int(try r.u32())
                let ulen = Int(try r.u32())
                let offset = Int(try r.u32())
                let len = Int(try r.u32())
                let cid = try r.chunkID()
                guard offset + len <= length, len >= PackFormat.tagLength else { throw r.fail("blob outside its pack") }
                entries.append(PackEntry(index: index, type: type, id: cid, compression: comp,
                                         uncompressedLength: ulen, offset: offset, length: len))
            }
            out.packs.append(IndexedPack(id: id, salt: salt, length: length, entries: entries))
        }
        try r.expectEnd()
        return out
    }
}
