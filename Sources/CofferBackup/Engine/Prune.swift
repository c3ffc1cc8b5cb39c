import Foundation
import CofferCore
import CofferStorage

extension Engine {
    // MARK: Prune

    /// The storage's own idea of "now": the timestamp of a tiny object written for the purpose.
    func storageNow() async throws(BackupError) -> Date {
        let name = "clock/" + Hex.string((0..<16).map { _ in UInt8.random(in: 0...255) })
        let what = "reading the storage's clock"
        do { try await objects.rawCreate(name, data: Data()) } catch { throw Self.storageError(error, doing: what) }
        let info = try await objects.stat(name, doing: what)
        try await objects.delete(name, doing: what)
        guard let info else { throw BackupError(.storage, object: name, message: "the storage lost \(name) right after writing it") }
        return info.modified
    }

    func prune(mode: PruneMode, progress: (@Sendable (WorkProgress) -> Void)? = nil) async throws(BackupError) -> PruneReport {
        var report = PruneReport()
        let started = ContinuousClock.now
        func tell(_ step: String, _ unit: String, _ done: Int, _ total: Int, _ bytesDone: Int64 = 0, _ bytesTotal: Int64 = 0) {
            progress?(WorkProgress(step: step, unit: unit, done: done, total: total, bytesDone: bytesDone, bytesTotal: bytesTotal,
                                   elapsed: ContinuousClock.now - started))
        }
        let graceSeconds: Double
        switch mode {
        case .singleWriterNow: graceSeconds = 0
        case .twoPhase(let g): graceSeconds = Double(g.components.seconds) + Double(g.components.attoseconds) / 1e18
        }
        // The storage's time before the snapshots are read: marks are aged against it, and the
        // deletions below happen only if this view of the snapshots is less than half a grace
        // period old by then (a backup that committed after this instant is then never robbed:
        // see "Several writers" in docs/REPOSITORY-OBJECTS.md).
        let now = try await storageNow()

        // 1. Everything read and verified before anything changes.
        let all = try await loadSnapshots()
        try verifyHeads(all, doing: "prune this repository")
        try await loadIndex()
        let state = index.withLock { $0 }
        if let e = state.damagedIndexObjects.first {
            throw BackupError(e.code, object: e.object,
                              message: "prune stopped before changing anything: \(e.message). Run check; a backup re-indexes the packs it listed")
        }
        report.liveSnapshots = all.count
        tell("reading the snapshots' trees", "snapshots", 0, all.count)
        let (needed, _, problems) = await collectNeeded(all)
        if let e = problems.first {
            throw BackupError(e.code, object: e.object, message: "prune stopped before changing anything: \(e.message)")
        }

        // Marks and their storage timestamps.
        var marks: [(ObjectID, PruneMark, Date)] = []
        // Stored sizes of what this run may delete, from the listings: bytesFreed counts the bytes
        // that really went (packs, superseded index objects, marks), not what an index claims.
        var storedSize: [String: Int] = [:]
        for info in try await listObjects("index/") { storedSize[info.name] = info.size }
        for info in try await listObjects("marks/") {
            storedSize[info.name] = info.size
            guard let id = Self.objectID(fromName: info.name, prefix: "marks/") else { continue }
            let plain = try await readSealed(info.name, id: id, type: .pruneMark)
            do { marks.append((id, try PruneMark.decode(plain, what: info.name), info.modified)) } catch {
                throw BackupError(.dataDamaged, object: info.name, message: "prune stopped before changing anything: \(info.name) is damaged: \(error)")
            }
        }

        // Every needed blob must be located: in a live pack, or in a condemned pack (then rescued).
        var condemnedBlobs: [ChunkID: ObjectID] = [:]
        var markedPacks: [ObjectID: IndexedPack] = [:]
        for (_, m, _) in marks { for p in m.packs { markedPacks[p.id] = p; for e in p.entries { condemnedBlobs[e.id] = p.id } } }
        // Marked orphans that a backup indexed after the mark: rescuable like marked packs.
        for (id, p) in state.condemnedButIndexed where markedPacks[id] == nil {
            markedPacks[id] = p
            for e in p.entries where condemnedBlobs[e.id] == nil { condemnedBlobs[e.id] = id }
        }
        var rescue = Set<ObjectID>()
        for (blob, sid) in needed where state.blobs[blob] == nil {
            if let p = condemnedBlobs[blob] { rescue.insert(p); continue }
            throw BackupError(.dataMissing, object: "blob \(blob.hex)",
                              message: "prune stopped before changing anything: blob \(blob.hex) needed by snapshot \(sid.hex.prefix(8)) is missing. "
                                + "Run `coffer check`; after damage, `coffer repair index`, a backup and `coffer repair snapshots` get the repository going again")
        }
        if !rescue.isEmpty {
            // A snapshot made after the mark needs these packs: index them again, before any deletion.
            let packs = rescue.compactMap { markedPacks[$0] }
            try await writeSealed(IndexFile(packs: packs).encoded(), type: .index) { $0.indexName }
            report.packsRescued = packs.count
        }

        // 2. Phase two: marks whose grace period has passed (storage time).
        let liveIndexed = Set(state.packs.keys)
        var pendingDeletes: [String] = []
        var doneMarks: [ObjectID] = []
        let listing = try await listObjects("data/")
        for info in listing { storedSize[info.name] = info.size }
        for (mid, m, t) in marks {
            guard now.timeIntervalSince(t) >= graceSeconds else {
                report.objectsPending += m.packs.count + m.orphans.count
                continue
            }
            for p in m.packs where !rescue.contains(p.id) && !liveIndexed.contains(p.id) {
                pendingDeletes.append(p.id.packName)
            }
            for o in m.orphans where !liveIndexed.contains(o) && !rescue.contains(o) {
                pendingDeletes.append(o.packName)
            }
            doneMarks.append(mid)
        }

        // 3. Phase one: what no live snapshot needs.
        var usedPerPack: [ObjectID: Int] = [:]
        for (blob, _) in needed { if let loc = state.blobs[blob] { usedPerPack[loc.pack, default: 0] += 1 } }
        var keepPacks: [IndexedPack] = []
        var toMark: [IndexedPack] = []
        var toRepack: [IndexedPack] = []
        for (id, p) in state.packs.sorted(by: { $0.key < $1.key }) {
            let used = p.entries.filter { state.blobs[$0.id]?.pack == id && needed[$0.id] != nil }
            if used.isEmpty {
                toMark.append(p)
            } else if used.count < p.entries.count {
                let usedBytes = used.reduce(0) { $0 + $1.length }
                let total = p.entries.reduce(0) { $0 + $1.length }
                if usedBytes * 10 < total * 8 { toRepack.append(p) } else { keepPacks.append(p) }
            } else {
                keepPacks.append(p)
            }
        }
        // Unindexed packs older than the grace period (an interrupted backup's; a running one's are younger).
        var orphans: [ObjectID] = []
        let markListed = Set(markedPacks.keys).union(marks.flatMap { $0.1.orphans })
        for info in listing {
            guard let id = Self.objectID(fromName: info.name, prefix: "data/"), info.name == id.packName,
                  state.packs[id] == nil, !markListed.contains(id) else { continue }
            if now.timeIntervalSince(info.modified) >= graceSeconds { orphans.append(id) }
        }

        // Repack live blobs of mostly-unused packs into new packs (written before anything is marked).
        var newPacks: [IndexedPack] = []
        if !toRepack.isEmpty {
            let opener = BlobOpener(keys: keys)
            var sink = PackSink(self)
            let repackBytes = toRepack.reduce(Int64(0)) { $0 + Int64($1.length) }
            var repackDone: Int64 = 0
            for (n, p) in toRepack.enumerated() {
                defer {
                    repackDone += Int64(p.length)
                    tell("repacking", "packs", n + 1, toRepack.count, repackDone, repackBytes)
                }
                let bytes: Data
                bytes = try await objects.get(p.id.packName, doing: "prune stopped before deleting anything: reading \(p.id.packName)")
                for e in p.entries where state.blobs[e.id]?.pack == p.id && needed[e.id] != nil {
                    let plain: Data
                    do { plain = try opener.open(blob: e, inPack: bytes, salt: p.salt) } catch {
                        throw BackupError(.dataDamaged, object: p.id.packName,
                                          message: "prune stopped before deleting anything: blob \(e.id.hex) in \(p.id.packName) is damaged: \(error.message). "
                                            + "Run `coffer repair index` (it sets the damaged packs aside), then a backup and `coffer repair snapshots`")
                    }
                    try await sink.add(type: e.type, id: e.id, plaintext: plain, compress: e.compression != .none && compresses) {
                        BackupError(.dataDamaged, message: "cannot repack blob \(e.id.hex): \($0)")
                    }
                }
            }
            try await sink.flush()
            newPacks = sink.packs
            report.packsRepacked = toRepack.count
            TestHooks.crashPoint("prune-repacked")
        }
        toMark += toRepack
        report.packsKept = keepPacks.count

        // New complete index, before any deletion; it supersedes every index object read.
        var oldIndexes = Array(state.indexObjects) + Array(state.supersededIndexObjects)
        var wroteIndex = false
        if !toMark.isEmpty || !newPacks.isEmpty || !pendingDeletes.isEmpty || !rescue.isEmpty || !state.supersededIndexObjects.isEmpty || state.indexObjects.count > 1 {
            var idx = IndexFile(supersedes: oldIndexes, packs: keepPacks + newPacks)
            if !rescue.isEmpty { idx.packs += rescue.compactMap { markedPacks[$0] } }
            try await writeSealed(idx.encoded(), type: .index) { $0.indexName }
            wroteIndex = true
            TestHooks.crashPoint("prune-indexed")
        }
        // Without a new index the one read is still the live one: it must stay.
        if !wroteIndex { oldIndexes = [] }
        var newMark: ObjectID? = nil
        if !toMark.isEmpty || !orphans.isEmpty {
            let mark = PruneMark(packs: toMark, orphans: orphans)
            newMark = try await writeSealed(mark.encoded(), type: .pruneMark) { $0.markName }.0
            report.objectsMarked = toMark.count + orphans.count
            TestHooks.crashPoint("prune-marked")
        }
        // Superseded index objects go now: the new index holds every live entry.
        for o in oldIndexes {
            try await objects.delete(o.indexName, doing: "deleting \(o.indexName)")
            report.objectsDeleted += 1
            report.bytesFreed += Int64(storedSize[o.indexName] ?? 0)
        }
        if case .singleWriterNow = mode, let newMark {
            for p in toMark { pendingDeletes.append(p.id.packName) }
            for o in orphans { pendingDeletes.append(o.packName) }
            doneMarks.append(newMark)
        } else {
            report.objectsPending += toMark.count + orphans.count
        }
        // Phase two's deletions last, then the marks that described them, and only while this
        // run's view of the snapshots is fresh (a prune suspended past half the grace period
        // might not see a snapshot written since that needs a marked pack).
        if case .twoPhase = mode, graceSeconds > 0, !pendingDeletes.isEmpty {
            // Test hook (TestHooks.stop(beforeDeleting:)): suspend the process here.
            if TestHooks.stopBeforeDeleting { raise(SIGSTOP) }  // raise: this thread stops before it goes on
            let elapsed = try await storageNow().timeIntervalSince(now)
            if elapsed > graceSeconds / 2 {
                try? await loadIndex()
                throw BackupError(.storage, message: "prune deleted nothing: \(Int(elapsed)) s passed on the storage's clock since it read "
                                    + "the snapshots (it was suspended or very slow), more than half the grace period. The new "
                                    + "index and marks are written and nothing is lost; run prune again")
            }
        }
        do {
            if TestHooks.armed("prune-deleting"), pendingDeletes.count > 1 {
                try await objects.rawDelete(Array(pendingDeletes.prefix(pendingDeletes.count / 2)))
                TestHooks.crashPoint("prune-deleting")
            }
            // In batches, so that progress shows how the deletions go.
            var deleted = 0
            let deleteBytes = pendingDeletes.reduce(Int64(0)) { $0 + Int64(storedSize[$1] ?? 0) }
            var deletedBytes: Int64 = 0
            while deleted < pendingDeletes.count {
                let batch = Array(pendingDeletes[deleted..<min(pendingDeletes.count, deleted + 256)])
                try await objects.rawDelete(batch)
                deleted += batch.count
                deletedBytes += batch.reduce(Int64(0)) { $0 + Int64(storedSize[$1] ?? 0) }
                tell("deleting", "objects", deleted, pendingDeletes.count, deletedBytes, deleteBytes)
            }
            try await objects.rawDelete(doneMarks.map(\.markName))
        } catch {
            throw Self.storageError(error, doing: "deleting pruned packs")
        }
        report.objectsDeleted += pendingDeletes.count + doneMarks.count
        // Each name once (a pack can be in two marks), at its listed size; this run's own mark (with
        // --now) was not listed: it was written and deleted by this run, so it freed nothing.
        report.bytesFreed += Set(pendingDeletes + doneMarks.map(\.markName)).reduce(Int64(0)) { $0 + Int64(storedSize[$1] ?? 0) }
        // Temporary files of writes that never finished (a killed or interrupted writer), once as
        // old as the grace period by the storage's clock (never one begun after this prune started).
        if let folder = localFolder {
            for t in try temporaryFiles() where now.timeIntervalSince(t.modified) >= graceSeconds {
                do { try folder.removeTemporaryFile(t.name) } catch { throw Self.storageError(error, doing: "removing \(t.name)") }
                report.temporaryFilesRemoved += 1
            }
        }
        try await loadIndex()
        treeCache.withLock { $0.removeAll() }
        return report
    }
}

extension Engine {
    /// `prune --unsafe-recover-no-free-space`: frees space on a full storage without writing anything
    /// (no clock object, no index, no mark, whose writes would fail for want of space).
    ///
    /// It reads and checks what a prune reads first (heads, every snapshot and tree, every needed
    /// blob located in the index or in a pack a mark lists), then deletes only packs that no index
    /// lists and that hold nothing a snapshot needs (what a backup that failed for want of space
    /// leaves), and every temporary file of an unfinished write. Unsafe because it has no grace
    /// period: the packs of a backup running elsewhere, not yet indexed, are deleted too (that
    /// backup then uploads them again before it commits, or fails), exactly as `--now` would.
    func pruneUnindexedWithoutWriting() async throws(BackupError) -> PruneReport {
        var report = PruneReport()
        let all = try await loadSnapshots()
        try verifyHeads(all, doing: "prune this repository")
        try await loadIndex(useCache: false)
        let state = index.withLock { $0 }
        if let e = state.damagedIndexObjects.first {
            // A damaged index object hides which packs are indexed: nothing can be told unused.
            throw BackupError(e.code, object: e.object,
                              message: "prune stopped before changing anything: \(e.message). Free some space, then run `coffer repair index`")
        }
        report.liveSnapshots = all.count
        let (needed, _, problems) = await collectNeeded(all)
        if let e = problems.first {
            throw BackupError(e.code, object: e.object, message: "prune stopped before changing anything: \(e.message)")
        }
        // Blobs a snapshot needs that only a marked pack holds (a prune would rescue that pack): kept.
        var markedBlobs: [ChunkID: ObjectID] = [:]
        for info in try await listObjects("marks/") {
            guard let id = Self.objectID(fromName: info.name, prefix: "marks/") else { continue }
            let plain = try await readSealed(info.name, id: id, type: .pruneMark)
            let mark: PruneMark
            do { mark = try PruneMark.decode(plain, what: info.name) } catch {
                throw BackupError(.dataDamaged, object: info.name, message: "prune stopped before changing anything: \(info.name) is damaged: \(error)")
            }
            for p in mark.packs { for e in p.entries { markedBlobs[e.id] = p.id } }
        }
        var keep = Set<ObjectID>()
        for (blob, sid) in needed where state.blobs[blob] == nil {
            if let p = markedBlobs[blob] { keep.insert(p); continue }
            throw BackupError(.dataMissing, object: "blob \(blob.hex)",
                              message: "prune stopped before changing anything: blob \(blob.hex) needed by snapshot \(sid.hex.prefix(8)) is missing. Run `coffer check`")
        }
        var deletes: [String] = []
        for info in try await listObjects("data/") {
            guard let id = Self.objectID(fromName: info.name, prefix: "data/"), info.name == id.packName,
                  state.packs[id] == nil, state.condemnedButIndexed[id] == nil, !keep.contains(id) else { continue }
            deletes.append(info.name)
            report.bytesFreed += Int64(info.size)
        }
        try await objects.delete(deletes, doing: "deleting unindexed packs")
        report.objectsDeleted = deletes.count
        if let folder = localFolder {
            for t in try temporaryFiles() {
                do { try folder.removeTemporaryFile(t.name) } catch { throw Self.storageError(error, doing: "removing \(t.name)") }
                report.temporaryFilesRemoved += 1
                report.bytesFreed += Int64(t.size)
            }
        }
        report.packsKept = state.packs.count
        return report
    }
}
