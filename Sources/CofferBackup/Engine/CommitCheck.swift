import Foundation
import CofferCore
import CofferStorage
import CofferPosix

/// Closes the suspended-writer hole before (and, when the commit itself was slow, after) a backup
/// writes its snapshot.
///
/// A backup deduplicates against the index it loaded when it started. A prune that runs while the
/// backup runs (or while the device sleeps with the backup suspended) can mark the packs holding
/// those blobs, or this run's own packs (indexed but not yet needed by any snapshot), and a later
/// prune deletes them once the grace period has passed on the storage's clock. A snapshot written
/// after that would name blobs that are gone. So, after its last pack and index and before its
/// snapshot, the backup reads the storage's clock, lists `marks/` and `data/`, and finds every blob
/// the new snapshot needs whose pack is marked or no longer present. Each such blob is uploaded
/// again into a new pack: copied from the marked pack while it still exists (decrypted and checked
/// against its keyed id), else re-encoded (trees, all built in memory by this run), else read
/// again from its source file (checked against its id: a file changed since is not used), else the
/// backup fails without writing a snapshot. A new index lists the new packs and this run's packs
/// that are still live and supersedes this run's earlier index objects (which may list packs that
/// are gone). Then the check runs again (a prune may have acted meanwhile) until it finds nothing.
///
/// The window that remains, and why it is closed: see docs/REPOSITORY-OBJECTS.md ("Several
/// writers"). In short, prune deletes a pack only if it read the snapshots less than half the grace
/// period before deleting and the pack was marked at least a whole grace period before; so a pack
/// this check saw unmarked at storage time `T` cannot be deleted by a prune that does not see a
/// snapshot written before `T + grace/2`. The backup compares the snapshot's own storage timestamp
/// with `T`; when the gap exceeds ``maximumCommitGap`` it checks (and repairs) once more, after the
/// snapshot exists.
final class CommitCheck {
    /// A snapshot stored more than this long (storage time) after the last clean check is checked
    /// again after the write. Safe for grace periods above 2 × (this + the storage clock's 1 s resolution).
    static let maximumCommitGap: TimeInterval = 1

    let run: BackupRun
    var engine: Engine { run.engine }
    /// Where repairs put blobs (consulted before the engine's index).
    private var relocated: [ChunkID: BlobLocation] = [:]
    private var repairPacks: [IndexedPack] = []
    private var repairIndexes: [ObjectID] = []
    private var markCache: [ObjectID: PruneMark] = [:]
    /// Blobs copied from marked packs, and blobs re-encoded or re-read from the source files.
    private(set) var copied = 0
    private(set) var reread = 0

    init(run: BackupRun) { self.run = run }

    /// What the storage shows at one storage-clock instant.
    struct View {
        var clock: Date
        /// Packs and orphans named by a pending prune mark.
        var condemned: Set<ObjectID>
        /// The marked packs with their blob lists (copies can be read from them while they exist).
        var markedPacks: [ObjectID: IndexedPack]
        /// Packs present in `data/`.
        var present: Set<ObjectID>
    }

    // MARK: Before and after the snapshot

    /// Repairs until a check finds every needed blob in a live pack; returns that check's storage time.
    func secure() async throws(BackupError) -> Date {
        for _ in 0..<4 {
            let view = try await survey()
            let risky = atRisk(view)
            if risky.isEmpty { return view.clock }
            try await repair(risky, view: view)
        }
        throw BackupError(.storage, message: "the backup was not committed: prunes kept marking the data it had just "
                            + "uploaded again. Earlier snapshots are intact; run the backup again")
    }

    /// After the snapshot is stored: when it was stored long after the last check (a suspension
    /// between the check and the write), checks and repairs once more. If a needed blob cannot be
    /// stored again, removes the snapshot (it is this run's and incomplete) and fails.
    func confirm(snapshotName: String, checkedAt: Date) async throws(BackupError) {
        let info = try await engine.objects.stat(snapshotName, doing: "reading the timestamp of \(snapshotName)")
        guard let info, info.modified.timeIntervalSince(checkedAt) > Self.maximumCommitGap else { return }
        let view = try await survey()
        let risky = atRisk(view)
        guard !risky.isEmpty else { return }
        do {
            try await repair(risky, view: view)
        } catch {
            try? await engine.objects.rawDelete([snapshotName])
            throw error
        }
    }

    /// Refreshes the engine's index after repairs, so later operations in this process see the new packs.
    func finish() async {
        if !repairIndexes.isEmpty { try? await engine.loadIndex() }
    }

    // MARK: Checking

    func survey() async throws(BackupError) -> View {
        let clock = try await engine.storageNow()
        var view = View(clock: clock, condemned: [], markedPacks: [:], present: [])
        for info in try await engine.listObjects("marks/") {
            guard let id = Engine.objectID(fromName: info.name, prefix: "marks/") else { continue }
            let mark: PruneMark
            if let m = markCache[id] {
                mark = m
            } else {
                let plain: [UInt8]
                do { plain = try await engine.readSealed(info.name, id: id, type: .pruneMark) } catch {
                    if error.code == .dataMissing { continue }  // deleted by a prune since the listing
                    throw error
                }
                do { mark = try PruneMark.decode(plain, what: info.name) } catch {
                    throw BackupError(.dataDamaged, object: info.name, message: "\(info.name) is damaged: \(error)")
                }
                markCache[id] = mark
            }
            for p in mark.packs {
                view.condemned.insert(p.id)
                view.markedPacks[p.id] = p
            }
            for o in mark.orphans { view.condemned.insert(o) }
        }
        for info in try await engine.listObjects("data/") {
            if let id = Engine.objectID(fromName: info.name, prefix: "data/"), info.name == id.packName { view.present.insert(id) }
        }
        return view
    }

    private func location(_ id: ChunkID) -> BlobLocation? {
        relocated[id] ?? engine.location(of: id)
    }

    /// Every blob the new snapshot needs (its trees, all built by this run, and the content they
    /// name) that is not in a present, unmarked pack.
    func atRisk(_ view: View) -> [ChunkID: BlobType] {
        var out: [ChunkID: BlobType] = [:]
        func check(_ id: ChunkID, _ type: BlobType) {
            guard out[id] == nil else { return }
            if let loc = location(id), view.present.contains(loc.pack), !view.condemned.contains(loc.pack) { return }
            out[id] = type
        }
        for (id, bytes) in run.pipe.producedTrees.withLock({ $0 }) {
            check(id, .tree)
            guard let tree = try? Tree.decode(bytes, what: "tree \(id.hex)") else { continue }
            for node in tree.nodes where node.kind == .file {
                for c in node.content { check(c, .data) }
            }
        }
        return out
    }

    // MARK: Repairing

    func repair(_ risky: [ChunkID: BlobType], view: View) async throws(BackupError) {
        let keys = engine.keys
        let params = engine.config.parameters
        var writer: PackWriter?
        var newPacks: [IndexedPack] = []
        func flush() async throws(BackupError) {
            guard let w = writer, w.blobCount > 0 else { return }
            writer = nil
            let f = w.finish()
            try await engine.objects.create(f.id.packName, data: f.bytes, id: f.id)
            newPacks.append(IndexedPack(id: f.id, salt: f.salt, length: f.bytes.count, entries: f.entries))
        }
        func add(_ type: BlobType, _ id: ChunkID, _ plain: Data, compress: Bool) async throws(BackupError) {
            if writer == nil { writer = PackWriter(keys: keys, parameters: params) }
            do { try writer!.add(type: type, id: id, plaintext: plain, compress: compress) } catch {
                throw BackupError(.dataDamaged, object: "blob \(id.hex)", message: "cannot pack blob \(id.hex) again: \(error)")
            }
            if writer!.byteCount >= params.targetPackSize { try await flush() }
        }

        // Copies still readable in marked packs (including this run's own, marked as unused or orphaned).
        var copies: [ChunkID: [(ObjectID, PackEntry, Data)]] = [:]
        for (pid, p) in view.markedPacks where view.present.contains(pid) {
            for e in p.entries where risky[e.id] != nil { copies[e.id, default: []].append((pid, e, p.salt)) }
        }
        let opener = BlobOpener(keys: keys)
        var missing: [ChunkID: BlobType] = [:]
        for (id, type) in risky.sorted(by: { $0.key < $1.key }) {
            var candidates = copies[id] ?? []
            if let loc = location(id), view.present.contains(loc.pack), let salt = engine.salt(of: loc.pack) {
                candidates.insert((loc.pack, loc.entry, salt), at: 0)
            }
            var done = false
            for (pid, entry, salt) in candidates {
                // A copy that cannot be read or does not verify is skipped: the next source is tried.
                guard let sealed = try? await engine.objects.rawGet(pid.packName, range: entry.range),
                      let plain = try? opener.open(sealed, entry: entry, salt: salt) else { continue }
                try await add(type, id, plain, compress: entry.compression != .none && engine.compresses)
                copied += 1
                done = true
                break
            }
            if done { continue }
            if type == .tree, let bytes = run.pipe.producedTrees.withLock({ $0[id] }) {
                try await add(.tree, id, Data(bytes), compress: engine.compresses)
                reread += 1
                continue
            }
            missing[id] = type
        }
        if !missing.isEmpty { try await rereadSources(&missing, add: add) }
        try await flush()

        // One index for the new packs and this run's packs that are still live; it supersedes this
        // run's earlier index objects, which may list packs a prune has deleted since. Written even
        // when the backup cannot commit, so that no index is left naming a deleted pack.
        // This run's packs are read back from its own index objects (not kept in memory: a first
        // backup's index can be large). One that a prune deleted was read by that prune, whose
        // complete index lists every pack of it that it kept; the others are marked or gone.
        repairPacks += newPacks
        let ownObjects = run.uploader.indexObjects
        var ownPacks: [IndexedPack] = []
        for id in ownObjects {
            let plain: [UInt8]
            do { plain = try await engine.readSealed(id.indexName, id: id, type: .index) } catch {
                if error.code == .dataMissing { continue }
                throw error
            }
            do { ownPacks += try IndexFile.decode(plain, what: id.indexName).packs } catch {
                throw BackupError(.dataDamaged, object: id.indexName, message: "\(id.indexName) is damaged: \(error)")
            }
        }
        var listed: [ObjectID: IndexedPack] = [:]
        for p in ownPacks + repairPacks where view.present.contains(p.id) || newPacks.contains(where: { $0.id == p.id }) {
            if !view.condemned.contains(p.id) { listed[p.id] = p }
        }
        let superseded = Array(Set(ownObjects + repairIndexes))
        if !superseded.isEmpty || !listed.isEmpty {
            let index = IndexFile(supersedes: superseded, packs: Array(listed.values))
            let (indexID, _) = try await engine.writeSealed(index.encoded(), type: .index) { $0.indexName }
            repairIndexes.append(indexID)
        }
        for p in newPacks {
            for e in p.entries { relocated[e.id] = BlobLocation(pack: p.id, entry: e) }
        }
        if !missing.isEmpty {
            await finish()
            throw BackupError(.dataMissing, object: "blob \(missing.keys.sorted().first!.hex)",
                              message: "the backup was not committed: while it ran (or was suspended), a prune deleted data "
                                + "it depended on, and \(missing.count) piece\(missing.count == 1 ? "" : "s") could not be "
                                + "uploaded again (the source files changed since they were read, or belong to a database "
                                + "captured earlier). Earlier snapshots are intact; run the backup again")
        }
    }

    /// Reads needed chunks again from the files this run backed up (not databases: their capture is
    /// gone), keeping only chunks whose keyed id still matches.
    private func rereadSources(_ missing: inout [ChunkID: BlobType],
                               add: (BlobType, ChunkID, Data, Bool) async throws(BackupError) -> Void) async throws(BackupError) {
        let chunkSize = engine.policy.plan(forFileStartingWith: [UInt8]()).chunkSize
        var files: [(String, TreeNode)] = run.reusedFiles
        for j in run.jobs where !j.isDatabase {
            if let node = j.state.withLock({ $0.failure == nil ? $0.node : nil }) { files.append((j.path, node)) }
        }
        for (path, node) in files where !missing.isEmpty {
            guard node.content.contains(where: { missing[$0] == .data }) else { continue }
            let ranges = ChunkRanges(length: Int(node.size), chunkSize: chunkSize)
            guard ranges.count == node.content.count else { continue }
            let fd = open(path, O_RDONLY)
            guard fd >= 0 else { continue }
            defer { close(fd) }
            for (i, cid) in node.content.enumerated() where missing[cid] == .data {
                let r = ranges[i]
                var buffer = Data(count: r.count)
                let n = buffer.withUnsafeMutableBytes { (try? Posix.preadFully(fd, $0.baseAddress!, count: r.count, offset: Int64(r.lowerBound))) ?? -1 }
                guard n == r.count, engine.keys.chunkID(of: buffer) == cid else { continue }
                try await add(.data, cid, buffer, false)
                missing[cid] = nil
                reread += 1
            }
        }
    }
}
