#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CofferCore

/// The cache's runs as the index sees them, with the packs that prune marks condemn left out.
struct IndexRuns: Sendable {
    var runs: [IndexRun] = []
    /// Per run, per pack ordinal: the pack is condemned by a pending prune mark.
    var excluded: [[Bool]] = []
}

/// Blob id → location: the mapped runs first (first run, first pack that is not condemned), then
/// the blobs indexed since the index was loaded (a small in-memory delta). Iterating yields
/// `(key, value)` pairs like a dictionary, each id once, streaming through the runs (check, prune).
struct BlobTable: Sequence, Sendable {
    var disk = IndexRuns()
    /// Blobs indexed since the index was loaded: id → pack (in `deltaPacks`) << 32 | entry index.
    /// A first backup indexes every blob here, so a reference (8 bytes) instead of a whole location
    /// (the pack id and the entry again, about 110 bytes) keeps its memory small.
    var delta: [ChunkID: UInt64] = [:]
    var deltaPacks: [IndexedPack] = []

    subscript(id: ChunkID) -> BlobLocation? {
        for (k, r) in disk.runs.enumerated() {
            if let rec = r.find(id, excluded: disk.excluded[k]) {
                return BlobLocation(pack: r.packID(Int(rec.pack)), entry: rec.entry)
            }
        }
        return delta[id].map(deltaLocation)
    }

    func deltaLocation(_ ref: UInt64) -> BlobLocation {
        let p = deltaPacks[Int(ref >> 32)]
        return BlobLocation(pack: p.id, entry: p.entries[Int(ref & 0xffff_ffff)])
    }

    /// Adds the blobs of a pack indexed during this process (those not already located).
    mutating func addDelta(_ pack: IndexedPack) {
        let p = UInt64(deltaPacks.count)
        deltaPacks.append(pack)
        for (i, e) in pack.entries.enumerated() where self[e.id] == nil {
            delta[e.id] = p << 32 | UInt64(i)
        }
    }

    /// Blobs in the runs (duplicates and condemned packs included) plus the delta.
    var approximateCount: Int { disk.runs.reduce(delta.count) { $0 + $1.count } }

    func makeIterator() -> AnyIterator<(key: ChunkID, value: BlobLocation)> {
        var k = 0, i = 0
        var last: ChunkID? = nil
        var deltaIterator = delta.makeIterator()
        return AnyIterator {
            while k < self.disk.runs.count {
                let r = self.disk.runs[k]
                while i < r.count {
                    let rec = r.record(i)
                    i += 1
                    if rec.id == last { continue }
                    let o = Int(rec.pack)
                    if o < self.disk.excluded[k].count, self.disk.excluded[k][o] { continue }
                    last = rec.id
                    // The same id in an earlier run: that one is the answer, already given.
                    if self.disk.runs[..<k].enumerated().contains(where: { $0.element.find(rec.id, excluded: self.disk.excluded[$0.offset]) != nil }) { continue }
                    return (key: rec.id, value: BlobLocation(pack: r.packID(o), entry: rec.entry))
                }
                k += 1
                i = 0
                last = nil
            }
            while let (id, ref) = deltaIterator.next() {
                if self.disk.runs.enumerated().contains(where: { $0.element.find(id, excluded: self.disk.excluded[$0.offset]) != nil }) { continue }
                return (key: id, value: self.deltaLocation(ref))
            }
            return nil
        }
    }
}

/// Pack id → pack (with its entries, read from the run when asked for), for packs not condemned.
/// Iterating yields `(key, value)` pairs like a dictionary, each pack once.
struct PackTable: Sequence, Sendable {
    var disk = IndexRuns()
    /// Where each pack of the runs is listed (first run wins).
    var located: [ObjectID: (run: Int, ordinal: Int)] = [:]
    var delta: [ObjectID: IndexedPack] = [:]

    subscript(id: ObjectID) -> IndexedPack? {
        if let p = delta[id] { return p }
        guard let l = located[id] else { return nil }
        return disk.runs[l.run].pack(l.ordinal)
    }

    /// The salt of a pack without reading its entries.
    func salt(of id: ObjectID) -> Data? {
        if let p = delta[id] { return p.salt }
        guard let l = located[id] else { return nil }
        return disk.runs[l.run].packSalt(l.ordinal)
    }

    /// The length of a pack without reading its entries.
    func length(of id: ObjectID) -> Int? {
        if let p = delta[id] { return p.length }
        guard let l = located[id] else { return nil }
        return disk.runs[l.run].packLength(l.ordinal)
    }

    func contains(_ id: ObjectID) -> Bool { delta[id] != nil || located[id] != nil }

    var keys: Set<ObjectID> { Set(located.keys).union(delta.keys) }
    var values: [IndexedPack] { map(\.value) }
    var count: Int { keys.count }

    func makeIterator() -> AnyIterator<(key: ObjectID, value: IndexedPack)> {
        var ids = Array(keys).makeIterator()
        return AnyIterator {
            guard let id = ids.next(), let p = self[id] else { return nil }
            return (key: id, value: p)
        }
    }
}
