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
