#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CofferCore

/// Scale testing only (the `coffer debug-synthetic-index` command and the engine's tests): index
/// objects that list blobs of packs that do not exist, to measure the index at millions of chunks
/// without storing their data. A repository holding them fails `check` (the packs are missing).
public struct SyntheticIndexReport: Sendable {
    public var blobs: Int
    public var packs: Int
    public var indexObjects: Int
}

extension Repository {
    /// Writes index objects listing `blobs` random blob ids in synthetic packs of `blobsPerPack`
    /// 4 KiB blobs, `blobsPerObject` blobs per index object. Deterministic for a given `seed`.
    @_spi(Testing)
    public func writeSyntheticIndex(blobs: Int, blobsPerPack: Int = 100, blobsPerObject: Int = 100_000,
                                    seed: UInt64) async throws(BackupError) -> SyntheticIndexReport {
        var rng = SyntheticRNG(seed: seed)
        var done = 0, packs = 0, objects = 0
        while done < blobs {
            var file = IndexFile()
            var inObject = 0
            while inObject < blobsPerObject && done < blobs {
                let n = min(blobsPerPack, blobs - done, blobsPerObject - inObject)
                var entries: [PackEntry] = []
                entries.reserveCapacity(n)
                for i in 0..<n {
                    entries.append(PackEntry(index: i, type: .data, id: rng.chunkID(), compression: .none,
                                             uncompressedLength: 4096, offset: i * 4112, length: 4112))
                }
                file.packs.append(IndexedPack(id: rng.objectID(), salt: Data(rng.bytes(32)), length: n * 4112 + 4096, entries: entries))
                packs += 1
                done += n
                inObject += n
            }
            try await engine.writeSealed(file.encoded(), type: .index) { $0.indexName }
            objects += 1
        }
        return SyntheticIndexReport(blobs: done, packs: packs, indexObjects: objects)
    }
}

/// xorshift64*: fast deterministic bytes for synthetic ids (not for keys).
struct SyntheticRNG {
    var s: UInt64
    init(seed: UInt64) { s = seed | 1 }
    mutating func next() -> UInt64 {
        s ^= s >> 12; s ^= s << 25; s ^= s >> 27
        return s &* 2685821657736338717
    }
    mutating func bytes(_ n: Int) -> [UInt8] {
        var out = [UInt8](); out.reserveCapacity(n)
        while out.count < n { withUnsafeBytes(of: next()) { out.append(contentsOf: $0.prefix(n - out.count)) } }
        return out
    }
    mutating func chunkID() -> ChunkID { try! ChunkID(bytes: bytes(32)) }
    mutating func objectID() -> ObjectID { try! ObjectID(bytes: bytes(32)) }
}

/// What `debug-scale open --probe` measures on the loaded index.
public struct IndexProbeReport: Sendable {
    public var runs: Int
    public var blobs: Int
    /// Share of random (absent) ids that the filters let through to the records.
    public var falsePositiveRate: Double
    public var absentLookupNs: Double
    public var presentLookupNs: Double
    /// Time to verify every run's tag again (what each open pays for the authentication).
    public var verifyMs: Double
}

extension Repository {
    /// Times `samples` lookups of random absent ids and of present ids drawn from the runs.
    @_spi(Testing)
    public func probeIndex(samples: Int) -> IndexProbeReport {
        let state = engine.index.withLock { $0 }
        let runs = state.blobs.disk.runs
        var rng = SyntheticRNG(seed: 77)
        let absent = (0..<samples).map { _ in rng.chunkID() }
        var present: [ChunkID] = []
        for r in runs where r.count > 0 {
            for _ in 0..<(samples / max(1, runs.count)) { present.append(r.record(Int(rng.next() % UInt64(r.count))).id) }
        }
        var passed = 0
        for id in absent { if runs.contains(where: { $0.mayContain(IDWords(id)) }) { passed += 1 } }
        let t0 = ContinuousClock.now
        var found = 0
        for id in absent where engine.location(of: id) != nil { found += 1 }
        let t1 = ContinuousClock.now
        for id in present where engine.location(of: id) != nil { found += 1 }
        let t2 = ContinuousClock.now
        func ns(_ d: Duration, _ n: Int) -> Double {
            (Double(d.components.seconds) * 1e9 + Double(d.components.attoseconds) / 1e9) / Double(max(1, n))
        }
        precondition(found == present.count, "a present id was not found")
        let t3 = ContinuousClock.now
        for r in runs { _ = RunTag.compute(path: engine.indexCache.path(r.name), mac: engine.indexCache.mac) }
        let verify = ContinuousClock.now - t3
        return IndexProbeReport(runs: runs.count, blobs: state.blobs.approximateCount,
                                falsePositiveRate: Double(passed) / Double(max(1, samples)),
                                absentLookupNs: ns(t1 - t0, absent.count), presentLookupNs: ns(t2 - t1, present.count),
                                verifyMs: ns(verify, 1) / 1e6)
    }
}
