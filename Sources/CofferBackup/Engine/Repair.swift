import Foundation
import CofferCore
import CofferStorage

/// `coffer repair index` and `coffer repair snapshots`: getting a damaged repository going again
/// (docs/CLI.md "coffer repair", docs/REPOSITORY-OBJECTS.md "Repair").
extension Engine {
    // MARK: Index

    /// Rebuilds the index from the packs that verify.
    ///
    /// Every pack is read whole and kept only if its bytes match its name, its header authenticates
    /// and every blob opens and matches its keyed id. The blobs of a damaged pack that still verify
    /// are copied into new packs. The damaged packs are condemned by a prune mark (as orphans)
    /// *before* the new index is written, so from then on no backup deduplicates against them or
    /// adopts them again: the next backup uploads their lost blobs again, and `prune` deletes them.
    /// Then one new index lists every verified pack and the new ones, superseding every index
    /// object read (damaged ones included), which are deleted as prune deletes what it supersedes.
    func repairIndex() async throws(BackupError) -> RepairIndexReport {
        var report = RepairIndexReport()
        try await loadIndex(useCache: false)
        let state = index.withLock { $0 }
        report.damagedIndexObjects = state.damagedIndexObjects.compactMap(\.object).sorted()

        // index/ before data/: a pack named by an index object listed here was stored before that
        // object, so the data/ listing shows it (unless a prune deleted it since).
        var indexObjects: [ObjectID] = []
        for info in try await listObjects("index/") {
            if let id = Self.objectID(fromName: info.name, prefix: "index/") { indexObjects.append(id) }
        }
        var present: [ObjectID: Int] = [:]
        for info in try await listObjects("data/") {
            guard let id = Self.objectID(fromName: info.name, prefix: "data/"), info.name == id.packName else { continue }
            present[id] = info.size
        }

        let opener = BlobOpener(keys: keys)
        var good: [IndexedPack] = []
        var damaged: [ObjectID] = []
        var have = Set<ChunkID>()
        for id in present.keys.sorted() {
            // A pack a pending mark condemns, and no live index lists, is left to that mark.
            if state.condemned.contains(id), state.condemnedButIndexed[id] == nil { continue }
            report.packsChecked += 1
            let bytes: Data
            do { bytes = try await objects.rawGet(id.packName) } catch {
                if error.code == .notFound { continue }  // deleted since the listing
                throw Self.storageError(error, doing: "reading \(id.packName)")
            }
            if let p = Self.verifiedPack(id, bytes, keys: keys, opener: opener) {
                good.append(p)
                if !state.condemned.contains(id) { for e in p.entries { have.insert(e.id) } }
                if state.packs[id] == nil && state.condemnedButIndexed[id] == nil { report.packsAdded += 1 }
            } else {
                damaged.append(id)
            }
        }
        report.packsIndexed = good.count
        report.damagedPacks = damaged.map(\.packName)

        // Salvage: the blobs of damaged packs that still verify, into new packs.
        var lost = Set<ChunkID>()
        var sink = PackSink(self)
        for id in damaged {
            let bytes: Data?
            do { bytes = try await objects.rawGet(id.packName) } catch {
                if error.code != .notFound { throw Self.storageError(error, doing: "reading \(id.packName)") }
                bytes = nil
            }
            // Where the blobs lie: the pack's own header if it still authenticates, else the index's record.
            var layout: (salt: Data, entries: [PackEntry])?
            if let bytes, let h = try? PackHeader(pack: bytes, keys: keys) {
                layout = (h.salt, h.entries)
            } else if let size = present[id], let h = try? await readPackHeader(id, size: size) {
                layout = (h.salt, h.entries)
            } else if let known = state.packs[id] ?? state.condemnedButIndexed[id] {
                layout = (known.salt, known.entries)
            }
            guard let layout else { continue }
            for e in layout.entries where !have.contains(e.id) {
                guard let bytes, let plain = try? opener.open(blob: e, inPack: bytes, salt: layout.salt) else {
                    lost.insert(e.id)
                    continue
                }
                try await sink.add(type: e.type, id: e.id, plaintext: plain, compress: e.compression != .none && compresses) {
                    BackupError(.dataDamaged, object: "blob \(e.id.hex)", message: "cannot pack blob \(e.id.hex) again: \($0)")
                }
                have.insert(e.id)
                report.blobsSalvaged += 1
            }
        }
        try await sink.flush()
        let newPacks = sink.packs
        report.packsWritten = newPacks.count
        // Packs an index names that are gone.
        for (id, p) in state.packs where present[id] == nil {
            report.missingPacks.append(id.packName)
            for e in p.entries { lost.insert(e.id) }
        }
        report.missingPacks.sort()
        report.blobsLost = lost.subtracting(have).count

        // The mark first: from here on nothing deduplicates against, adopts or rescues the damaged packs.
        if !damaged.isEmpty {
            try await writeSealed(PruneMark(packs: [], orphans: damaged.sorted()).encoded(), type: .pruneMark) { $0.markName }
        }
        if !indexObjects.isEmpty || !good.isEmpty || !newPacks.isEmpty {
            try await writeSealed(IndexFile(supersedes: indexObjects.sorted(), packs: good + newPacks).encoded(), type: .index) { $0.indexName }
            TestHooks.crashPoint("repair-indexed")
            try await objects.delete(indexObjects.map(\.indexName), doing: "deleting the replaced index objects")
            report.indexObjectsReplaced = indexObjects.count
        }
        try await loadIndex(useCache: false)
        treeCache.withLock { $0.removeAll() }
        return report
    }

    /// The pack as an index records it, if every byte of it verifies; `nil` when it is damaged.
    static func verifiedPack(_ id: ObjectID, _ bytes: Data, keys: RepositoryKeys, opener: BlobOpener) -> IndexedPack? {
        guard id.verify(bytes), let h = try? PackHeader(pack: bytes, keys: keys) else { return nil }
        for e in h.entries {
            guard (try? opener.open(blob: e, inPack: bytes, salt: h.salt)) != nil else { return nil }
        }
        return IndexedPack(id: id, salt: h.salt, length: bytes.count, entries: h.entries)
    }

    // MARK: Snapshots

    /// Rewrites every snapshot that needs a blob the index does not have (run `repairIndex` first:
    /// it is what finds damaged data) or a folder listing that cannot be read: files with lost data
    /// are dropped, folders whose listing is lost are kept empty, everything else is kept as it was.
    /// The new trees go into new packs and an index, then each new snapshot is written and the old
    /// one deleted. A rewritten snapshot keeps its writer, time, host and paths, gains the tag
    /// `repaired`, and keeps its seq, except a writer's newest, which gets the next seq (so that a
    /// device or vault that recorded the old one as the writer's head accepts the new one).
    func repairSnapshots(dryRun: Bool) async throws(BackupError) -> RepairSnapshotsReport {
        var report = RepairSnapshotsReport()
        report.dryRun = dryRun
        let all = try await loadSnapshots()
        try verifyHeads(all, doing: "repair snapshots in this repository")
        try await loadIndex()
        report.snapshotsChecked = all.count

        let rewriter = TreeRewriter(engine: self)
        var plan: [(old: ObjectID, snapshot: Snapshot, root: ChunkID, lost: [String], dropped: Int)] = []
        for (sid, snap) in all {
            if let r = await rewriter.rewrite(snap.root) {
                guard r.id != snap.root else { continue }
                plan.append((sid, snap, r.id, r.lost, r.dropped))
            } else {
                let names = snap.paths.map { ($0.split(separator: "/").last.map(String.init) ?? $0) + "/" }
                plan.append((sid, snap, rewriter.store(Tree(nodes: [])), names, Int(snap.summary.files)))
            }
        }
        if dryRun {
            report.repaired = plan.map { RepairedSnapshot(oldID: $0.old.hex, newID: nil, lost: $0.lost) }
            return report
        }
        guard !plan.isEmpty else { return report }

        // Trees, then their index, then the snapshots (the write order of a backup).
        var sink = PackSink(self)
        for (id, bytes) in rewriter.newTrees {
            try await sink.add(type: .tree, id: id, plaintext: Data(bytes), compress: compresses) {
                BackupError(.invalidArgument, message: "a rewritten folder listing is too large to store: \($0)")
            }
        }
        try await sink.flush()
        let newPacks = sink.packs
        report.treesWritten = rewriter.newTrees.count
        if !newPacks.isEmpty {
            try await writeSealed(IndexFile(packs: newPacks).encoded(), type: .index) { $0.indexName }
            index.withLock { state in for p in newPacks { state.add(p) } }
        }

        // Seqs: a writer's newest snapshot is replaced by one with the next seq.
        var newestSeq: [[UInt8]: UInt64] = [:]
        for (_, s) in all { newestSeq[s.writerID] = max(newestSeq[s.writerID] ?? 0, s.seq) }
        let recorded = (try? deviceStore?.heads.heads(repositoryID: repositoryID)) ?? []
        var nextSeq: [[UInt8]: UInt64] = [:]
        for (w, seq) in newestSeq {
            let head = recorded.first { $0.writerID == Hex.string(w) }?.seq ?? 0
            nextSeq[w] = max(seq, head) + 1
        }
        for item in plan {
            // A repair interrupted after writing this snapshot's replacement: use that one.
            if let (doneID, _) = all.first(where: { $0.1.root == item.root && $0.1.writerID == item.snapshot.writerID
                    && $0.1.timeSec == item.snapshot.timeSec && $0.1.timeNsec == item.snapshot.timeNsec
                    && $0.1.tags.contains("repaired") && $0.0 != item.old }) {
                try await objects.delete(item.old.snapshotName, doing: "removing \(item.old.snapshotName)")
                _ = snapshotCache.withLock { $0.removeValue(forKey: item.old) }
                report.repaired.append(RepairedSnapshot(oldID: item.old.hex, newID: doneID.hex, lost: item.lost))
                continue
            }
            var s = item.snapshot
            s.root = item.root
            s.summary.files = s.summary.files >= UInt64(item.dropped) ? s.summary.files - UInt64(item.dropped) : 0
            if !s.tags.contains("repaired") { s.tags.append("repaired") }
            if s.seq == newestSeq[s.writerID] {
                s.seq = nextSeq[s.writerID]!
                nextSeq[s.writerID]! += 1
                s.prev = item.old
            }
            let (newID, _) = try await writeSealed(s.encoded(), type: .snapshot) { $0.snapshotName }
            TestHooks.crashPoint("repair-snapshot")
            try await objects.delete(item.old.snapshotName, doing: "removing \(item.old.snapshotName)")
            snapshotCache.withLock {
                $0.removeValue(forKey: item.old)
                $0[newID] = s
            }
            report.repaired.append(RepairedSnapshot(oldID: item.old.hex, newID: newID.hex, lost: item.lost))
        }
        recordHeads(try await loadSnapshots())
        return report
    }
}

/// Rewrites trees without what is lost (see ``Engine/repairSnapshots(dryRun:)``), each tree once.
final class TreeRewriter {
    struct Result {
        /// The tree to use (the same id when nothing below it is lost).
        var id: ChunkID
        /// Lost paths relative to this tree.
        var lost: [String]
        /// Files dropped below this tree.
        var dropped: Int
    }

    let engine: Engine
    /// Tree id → its rewrite, or `nil` when the listing cannot be read.
    private var memo: [ChunkID: Result?] = [:]
    /// Trees to store, in the order made (children before parents).
    private(set) var newTrees: [(ChunkID, [UInt8])] = []
    private var made = Set<ChunkID>()

    init(engine: Engine) { self.engine = engine }

    func rewrite(_ id: ChunkID) async -> Result? {
        if let known = memo[id] { return known }
        guard let tree = try? await engine.readTree(id) else {
            memo[id] = .some(nil)
            return nil
        }
        var nodes: [TreeNode] = []
        var lost: [String] = []
        var dropped = 0
        var changed = false
        for n in tree.nodes {
            let name = String(decoding: n.name, as: UTF8.self)
            if n.kind == .file {
                if n.content.allSatisfy({ engine.location(of: $0) != nil }) {
                    nodes.append(n)
                } else {
                    lost.append(name)
                    dropped += 1
                    changed = true
                }
            } else if n.kind == .directory, let sub = n.subtree {
                var kept = n
                if let r = await rewrite(sub) {
                    kept.subtree = r.id
                    lost += r.lost.map { name + "/" + $0 }
                    dropped += r.dropped
                } else {
                    kept.subtree = store(Tree(nodes: []))
                    lost.append(name + "/")
                }
                if kept.subtree != sub { changed = true }
                nodes.append(kept)
            } else {
                nodes.append(n)
            }
        }
        let result = changed ? Result(id: store(Tree(nodes: nodes)), lost: lost, dropped: dropped) : Result(id: id, lost: [], dropped: 0)
        memo[id] = .some(result)
        return result
    }

    /// The id of `tree`; queued for storing unless the index has it already.
    func store(_ tree: Tree) -> ChunkID {
        let bytes = tree.encoded()
        let id = engine.keys.chunkID(of: bytes)
        if engine.location(of: id) == nil, made.insert(id).inserted { newTrees.append((id, bytes)) }
        return id
    }
}
