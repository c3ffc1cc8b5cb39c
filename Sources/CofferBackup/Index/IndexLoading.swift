#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CofferCore

extension Engine {
    /// Fills the index part of `state` (`state.condemned` must already hold the packs prune marks
    /// list) from the device cache, reading only the index objects the cache does not cover yet.
    /// With `useCache: false` every index object is read and verified again and the cache rebuilt.
    func loadIndexObjects(into state: inout IndexState, useCache: Bool) async throws(BackupError) {
        let cache = indexCache
        var present = Set<ObjectID>()
        for info in try await listObjects("index/") {
            if let id = Self.objectID(fromName: info.name, prefix: "index/") { present.insert(id) }
        }
        let old = useCache ? cache.loadRuns() : []
        var runs = old
        // A run is usable only while every index object it was built from is still there.
        if !Set(runs.flatMap(\.covered)).isSubset(of: present) { runs = [] }

        var damaged = Set<ObjectID>()
        var batch = RunBatch()
        var fresh: [IndexRun] = []
        func readNew(_ ids: [ObjectID], skipping: Set<ObjectID>) async throws(BackupError) {
            for id in ids where !skipping.contains(id) {
                let name = id.indexName
                do {
                    let plain = try await readSealed(name, id: id, type: .index)
                    batch.add(id, try IndexFile.decode(plain, what: name))
                } catch let e as BackupError {
                    if e.code == .storage { throw e }
                    // A damaged index object does not stop the repository from opening: its packs look
                    // unindexed (backups re-adopt them from their headers), check names it, prune refuses.
                    state.damagedIndexObjects.append(e)
                    damaged.insert(id)
                } catch {
                    state.damagedIndexObjects.append(BackupError(.dataDamaged, object: name, message: "\(name) is damaged: \(error)"))
                    damaged.insert(id)
                }
                if batch.records.count >= cache.batchRecords {
                    fresh.append(try cache.writeRun(batch))
                    batch = RunBatch()
                }
            }
        }
        var covered = Set(runs.flatMap(\.covered))
        // Objects the runs already know to be superseded (a prune that stopped before deleting
        // them) are not read again.
        try await readNew(present.subtracting(covered).subtracting(runs.flatMap(\.superseded)).sorted(), skipping: [])
        var superseded = Set(runs.flatMap(\.superseded)).union(batch.superseded).union(fresh.flatMap(\.superseded))
            .intersection(present)
        if !superseded.isDisjoint(with: covered.union(batch.covered).union(fresh.flatMap(\.covered))) {
            // A newer complete index (prune) supersedes objects already read: read the live ones again.
            runs = []
            fresh = []
            batch = RunBatch()
            state.damagedIndexObjects = []
            damaged = []
            try await readNew(present.subtracting(superseded).sorted(), skipping: [])
            covered = []
            superseded = Set(batch.superseded).union(fresh.flatMap(\.superseded)).intersection(present)
        }
        if !batch.records.isEmpty || !batch.covered.isEmpty { fresh.append(try cache.writeRun(batch)) }
        batch = RunBatch()
        runs += fresh.filter { !$0.covered.isEmpty }

        // Keep few runs: merge all when the small ones reach a quarter of the largest, else merge
        // the small ones together when there are many.
        if runs.count > 1 {
            let largest = runs.max { $0.count < $1.count }!
            let small = runs.reduce(0) { $0 + $1.count } - largest.count
            if small * 4 >= largest.count {
                runs = [try cache.merge(runs)]
            } else if runs.count > 8 {
                let rest = runs.filter { $0 !== largest }
                runs = [largest, try cache.merge(rest)]
            }
        }
        if runs.map(\.name) != old.map(\.name) || !useCache { try cache.commit(runs) }

        state.supersededIndexObjects = superseded
        state.indexObjects = present.subtracting(superseded).subtracting(damaged)
        var disk = IndexRuns()
        var located: [ObjectID: (run: Int, ordinal: Int)] = [:]
        for (k, r) in runs.enumerated() {
            var ex = [Bool](repeating: false, count: r.packCount)
            for o in 0..<r.packCount {
                let id = r.packID(o)
                if state.condemned.contains(id) {
                    ex[o] = true
                    if state.condemnedButIndexed[id] == nil { state.condemnedButIndexed[id] = r.pack(o) }
                } else if located[id] == nil {
                    located[id] = (k, o)
                }
            }
            disk.runs.append(r)
            disk.excluded.append(ex)
        }
        state.blobs = BlobTable(disk: disk)
        state.packs = PackTable(disk: disk, located: located)
    }
}
