#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CofferCore

/// A snapshot object (`snapshots/<id>`, sealed type snapshot).
struct Snapshot: Sendable, Hashable {
    static let magic = "CFSN"
    static let version: UInt16 = 1

    /// 16 bytes.
    var writerID: [UInt8]
    var seq: UInt64
    /// The same writer's previous snapshot.
    var prev: ObjectID?
    /// The snapshot used for the unchanged-file shortcut.
    var parent: ObjectID?
    /// When the backup started (the unchanged-file shortcut's "last scan" time), Unix time.
    var timeSec: Int64
    var timeNsec: UInt32
    var root: ChunkID
    var hostname: String
    var paths: [String]
    var tags: [String]
    var summary: SnapshotSummary
    /// The root tree mirrors the absolute source paths (`home/me/docs/...`) instead of holding one
    /// entry per source named by its last component: written when two sources share a last name.
    var fullPaths = false

    var time: Date { Date(timeIntervalSince1970: Double(timeSec) + Double(timeNsec) / 1e9) }

    func encoded() -> [UInt8] {
        var w = WireWriter(capacity: 256)
        w.raw(Array(Self.magic.utf8))
        w.u16(Self.version)
        w.u16(0)
        w.raw(writerID)
        w.u64(seq)
        w.u8((prev != nil ? 1 : 0) | (parent != nil ? 2 : 0) | (fullPaths ? 4 : 0))
        w.raw(prev?.bytes ?? [UInt8](repeating: 0, count: 32))
        w.raw(parent?.bytes ?? [UInt8](repeating: 0, count: 32))
        w.i64(timeSec)
        w.u32(timeNsec)
        w.id(root)
        w.string16(hostname)
        w.u16(UInt16(paths.count))
        for p in paths { w.string16(p) }
        w.u16(UInt16(tags.count))
        for t in tags { w.string16(t) }
        w.u64(summary.files)
        w.u64(summary.directories)
        w.u64(summary.bytesTotal)
        w.u64(summary.bytesNew)
        w.u64(summary.bytesStored)
        w.u64(summary.unreadable)
        return w.bytes
    }

    static func decode(_ bytes: [UInt8], what: String) throws(WireError) -> Snapshot {
        var r = WireReader(bytes, what: what)
        try r.expectMagic(magic, version: version)
        let writer = Array(try r.take(16))
        let seq = try r.u64()
        let flags = try r.u8()
        guard flags & ~7 == 0 else { throw r.fail("unknown flags") }
        let prevBytes = Array(try r.take(32))
        let parentBytes = Array(try r.take(32))
        let timeSec = try r.i64()
        let timeNsec = try r.u32()
        guard timeNsec < 1_000_000_000 else { throw r.fail("bad time") }
        let root = try r.chunkID()
        let host = try r.string16()
        var paths: [String] = []
        for _ in 0..<Int(try r.u16()) { paths.append(try r.string16()) }
        var tags: [String] = []
        for _ in 0..<Int(try r.u16()) { tags.append(try r.string16()) }
        let s = SnapshotSummary(files: try r.u64(), directories: try r.u64(), bytesTotal: try r.u64(),
                                bytesNew: try r.u64(), bytesStored: try r.u64(), unreadable: try r.u64())
        try r.expectEnd()
        func id(_ b: [UInt8], _ present: Bool) throws(WireError) -> ObjectID? {
            guard present else {
                guard b.allSatisfy({ $0 == 0 }) else { throw r.fail("absent id not zero") }
                return nil
            }
            return try? ObjectID(bytes: b)
        }
        return Snapshot(writerID: writer, seq: seq, prev: try id(prevBytes, flags & 1 != 0),
                        parent: try id(parentBytes, flags & 2 != 0), timeSec: timeSec, timeNsec: timeNsec,
                        root: root, hostname: host, paths: paths, tags: tags, summary: s, fullPaths: flags & 4 != 0)
    }
}

/// Prune's record of objects to delete once the grace period has passed (`marks/<id>`, sealed
/// type 6). Packs carry their index records so that a pack a newer snapshot turns out to need can
/// be indexed again instead of deleted.
struct PruneMark: Sendable {
    static let magic = "CFMK"
    static let version: UInt16 = 1

    var packs: [IndexedPack] = []
    /// Unindexed packs (left by interrupted backups) to delete: id and size only.
    var orphans: [ObjectID] = []

    func encoded() -> [UInt8] {
        var w = WireWriter()
        w.raw(Array(Self.magic.utf8))
        w.u16(Self.version)
        w.u16(0)
        let o = orphans.sorted()
        w.u32(UInt32(o.count))
        for x in o { w.id(x) }
        w.raw(IndexFile(supersedes: [], packs: packs).encoded())
        return w.bytes
    }

    static func decode(_ bytes: [UInt8], what: String) throws(WireError) -> PruneMark {
        var r = WireReader(bytes, what: what)
        try r.expectMagic(magic, version: version)
        var m = PruneMark()
        let n = Int(try r.u32())
        guard n <= r.remaining / 32 else { throw r.fail("impossible count") }
        for _ in 0..<n { m.orphans.append(try r.objectID()) }
        let rest = Array(try r.take(r.remaining))
        m.packs = try IndexFile.decode(rest, what: what).packs
        return m
    }
}
