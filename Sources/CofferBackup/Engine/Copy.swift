import Foundation
import CofferCore
import CofferStorage

// `coffer copy`: snapshots from one repository into another, re-encrypted under the destination's
// key and deduplicated against what it holds. The rules (which writer a copy belongs to, how a
// second copy finds what the first one wrote) are in docs/CLI.md, "copy", and docs/FORMAT.md.

/// Progress of ``Repository/copy(snapshots:to:progress:)``.
public struct CopyProgress: Sendable, Hashable {
    /// Snapshots whose trees are done, of those to copy.
    public var snapshotsDone: Int
    public var snapshotsTotal: Int
    /// Data and tree blobs read from the source (each verified), of those the copy has to read.
    public var blobsDone: Int
    public var blobsTotal: Int
    /// Stored bytes of those blobs (what is read from the source's storage).
    public var bytesDone: Int64
    public var bytesTotal: Int64
    /// Bytes uploaded to the destination so far (packs and index objects).
    public var bytesWritten: Int64
    public var elapsed: Duration
}

/// One snapshot of ``CopySummary``.
public struct CopiedSnapshot: Sendable, Hashable {
    /// The snapshot's id in the source and in the destination.
    public var sourceID: String
    public var destinationID: String
    /// True when an earlier copy had already put it there (nothing was written for it).
    public var alreadyPresent: Bool
    public var time: Date
    public var hostname: String
    public var paths: [String]
}

/// What ``Repository/copy(snapshots:to:progress:)`` did.
public struct CopySummary: Sendable, Hashable {
    /// The selected snapshots, oldest first.
    public var snapshots: [CopiedSnapshot]
    /// Blobs read from the source and verified; blobs the destination did not have, written.
    public var blobsRead: Int
    public var blobsWritten: Int
    /// Bytes uploaded to the destination (packs and index objects; the snapshot objects are small).
    public var bytesWritten: Int64
    public var duration: Duration

    public var snapshotsCopied: Int { snapshots.filter { !$0.alreadyPresent }.count }
    public var snapshotsAlreadyPresent: Int { snapshots.filter(\.alreadyPresent).count }
}

extension Repository {
    /// Copies snapshots of this repository into `destination`: every blob is read and verified
    /// under this repository's key, identified and encrypted under the destination's key (with its
    /// padding and compression), and written only when the destination does not hold it yet.
    ///
    /// A copied snapshot keeps its time, host, paths, tags, summary and `seq`; its writer is
    /// `SHA-256("coffer copy writer v1" ‖ source writer)` cut to 16 bytes, so copies form their own
    /// chain in the destination (a forget there never counts them as the copying device's own
    /// backups) and a second copy recognises what the first one wrote (same writer, seq and time):
    /// those are reported as already present and cost nothing but reading their trees, which also
    /// tells the copy which destination blob each source blob became, so an incremental copy reads
    /// only blobs that are new in the source.
    ///
    /// - Parameters:
    ///   - selectors: `latest`, ids or id prefixes; empty copies every snapshot.
    ///   - progress: called from the copying task, at every blob read.
    /// - Throws: ``BackupError``: `.invalidArgument` (the same repository twice), `.snapshotNotFound`,
    ///   `.staleRepository` (either side shows an older head than this device has seen), `.dataDamaged`
    ///   / `.dataMissing` (a source blob fails verification: nothing of that run's snapshots is
    ///   written, what was uploaded is reused by the next run), `.storage`, `.cancelled`.
    public func copy(snapshots selectors: [String], to destination: Repository,
                     progress: @escaping @Sendable (CopyProgress) -> Void = { _ in }) async throws(BackupError) -> CopySummary {
        guard destination.repositoryID != repositoryID else {
            throw BackupError(.invalidArgument, message: "the source and the destination are the same repository (\(repositoryID)): nothing to copy")
        }
        let start = ContinuousClock.now
        let source = engine, dest = destination.engine
        let all = try await source.loadSnapshots()
        try source.verifyHeads(all, doing: "copy from this repository")
        let destAll = try await dest.loadSnapshots()
        try dest.verifyHeads(destAll, doing: "copy into this repository")

        var selected: [(ObjectID, Snapshot)]
        if selectors.isEmpty {
            selected = all
        } else {
            var seen = Set<ObjectID>()
            selected = []
            for sel in selectors {
                let pick = try source.resolve(sel, in: all)
                if seen.insert(pick.0).inserted { selected.append(pick) }
            }
            selected.sort { ($0.1.timeSec, $0.1.timeNsec, $0.0) < ($1.1.timeSec, $1.1.timeNsec, $1.0) }
        }

        let copier = GenerationCopier(old: source, new: dest)
        // Destination snapshots by identity (writer, seq, time) and source ids → destination ids.
        var destByIdentity: [String: (ObjectID, Snapshot)] = [:]
        for (id, s) in destAll { destByIdentity[GenerationCopier.identity(s)] = (id, s) }
        func copied(_ s: Snapshot) -> (ObjectID, Snapshot)? {
            var c = s
            c.writerID = GenerationCopier.copyWriter(s.writerID)
            return destByIdentity[GenerationCopier.identity(c)]
        }
        var destOf: [ObjectID: ObjectID] = [:]
        for (id, s) in all { if let c = copied(s) { destOf[id] = c.0 } }

        let todo = selected.filter { destOf[$0.0] == nil }
        // What an earlier copy wrote tells which destination blob each source blob became: the
        // parent's copy (or the writer's newest copy) is matched node by node, trees only.
        let sourceByID = Dictionary(all.map { ($0.0, $0.1) }, uniquingKeysWith: { a, _ in a })
        for (_, s) in todo {
            let base: ObjectID? = {
                if let p = s.parent, destOf[p] != nil { return p }
                return all.filter { destOf[$0.0] != nil && $0.1.writerID == s.writerID && $0.1.seq < s.seq }
                    .max { $0.1.seq < $1.1.seq }?.0
            }()
            guard let base, let b = sourceByID[base], let d = destOf[base], let ds = destAll.first(where: { $0.0 == d })?.1 else { continue }
            try await copier.seed(old: b.root, new: ds.root)
        }

        // The reading ahead: every blob the copy will read, for a progress with a total and an ETA.
        let (blobsTotal, bytesTotal) = try await copier.plan(todo.map(\.1.root))

        var p = CopyProgress(snapshotsDone: 0, snapshotsTotal: todo.count, blobsDone: 0, blobsTotal: blobsTotal,
                             bytesDone: 0, bytesTotal: bytesTotal, bytesWritten: 0, elapsed: .zero)
        copier.onRead = { length in
            p.blobsDone += 1
            p.bytesDone += Int64(length)
            p.bytesWritten = copier.bytesWritten
            p.elapsed = ContinuousClock.now - start
            progress(p)
        }
        var roots: [ObjectID: ChunkID] = [:]
        for (id, s) in todo {
            if Task.isCancelled { throw BackupError(.cancelled, message: "the copy was cancelled; what was uploaded is reused by the next copy") }
            roots[id] = try await copier.tree(s.root)
            p.snapshotsDone += 1
            progress(p)
        }
        // Blobs first (packs, then the index that lists them), snapshots last, each after the
        // snapshots it names, as a backup writes them.
        try await copier.flush()
        var destSnaps = destAll.map { ($0.0, $0.1) }
        for (id, s) in todo {
            var n = s
            n.writerID = GenerationCopier.copyWriter(s.writerID)
            n.prev = destSnaps.filter { $0.1.writerID == n.writerID && $0.1.seq < n.seq }.max { $0.1.seq < $1.1.seq }?.0
            n.parent = s.parent.flatMap { destOf[$0] }
            n.root = roots[id]!
            let (nid, _) = try await dest.writeSealed(n.encoded(), type: .snapshot) { $0.snapshotName }
            destOf[id] = nid
            destSnaps.append((nid, n))
        }
        dest.recordHeads(destSnaps)
        p.bytesWritten = copier.bytesWritten
        p.elapsed = ContinuousClock.now - start
        progress(p)

        let copiedIDs = Set(todo.map(\.0))
        return CopySummary(
            snapshots: selected.map { id, s in
                CopiedSnapshot(sourceID: id.hex, destinationID: destOf[id]!.hex, alreadyPresent: !copiedIDs.contains(id),
                               time: s.time, hostname: s.hostname, paths: s.paths)
            },
            blobsRead: copier.blobsRead, blobsWritten: copier.blobsWritten, bytesWritten: copier.bytesWritten,
            duration: ContinuousClock.now - start)
    }
}

extension GenerationCopier {
    /// The blobs below `roots` that ``tree(_:)`` will read (those not mapped yet), counted once,
    /// and their stored bytes: trees are read (and cached) to find them.
    func plan(_ roots: [ChunkID]) async throws(BackupError) -> (blobs: Int, bytes: Int64) {
        var total = Set<ChunkID>()
        var bytes: Int64 = 0
        var visited = Set<ChunkID>()
        func walk(_ tree: ChunkID) async throws(BackupError) {
            guard map[tree] == nil, visited.insert(tree).inserted else { return }
            if total.insert(tree).inserted { bytes += Int64(old.location(of: tree)?.entry.length ?? 0) }
            for node in try await old.readTree(tree).nodes {
                switch node.kind {
                case .file:
                    for id in node.content where map[id] == nil && total.insert(id).inserted {
                        bytes += Int64(old.location(of: id)?.entry.length ?? 0)
                    }
                case .directory: if let sub = node.subtree { try await walk(sub) }
                case .symlink, .fifo: break
                }
            }
        }
        for r in roots { try await walk(r) }
        return (total.count, bytes)
    }

    /// The writer a copied snapshot belongs to in the destination: the first 16 bytes of
    /// SHA-256("coffer copy writer v1" ‖ the source writer).
    static func copyWriter(_ writer: [UInt8]) -> [UInt8] {
        Array(ObjectID(hashing: Array("coffer copy writer v1".utf8) + writer).bytes.prefix(16))
    }

    /// Learns from a snapshot copied earlier: `old` (a source tree) was copied as `new` (a
    /// destination tree). Both are read and matched node by node; where they agree (names, kinds,
    /// as many chunks) each source blob is mapped to the destination blob at the same place, when
    /// the destination's index lists it. A tree is mapped only when all below it matched.
    func seed(old o: ChunkID, new n: ChunkID) async throws(BackupError) {
        guard map[o] == nil, new.location(of: n) != nil, old.location(of: o) != nil else { return }
        let ot = try await old.readTree(o), nt = try await new.readTree(n)
        guard ot.nodes.count == nt.nodes.count else { return }
        var whole = true
        for (a, b) in zip(ot.nodes, nt.nodes) {
            guard a.name == b.name, a.kind == b.kind else { return }
            switch a.kind {
            case .file:
                guard a.content.count == b.content.count else { whole = false; continue }
                for (x, y) in zip(a.content, b.content) where map[x] == nil {
                    if new.location(of: y) != nil { map[x] = y } else { whole = false }
                }
            case .directory:
                guard let sa = a.subtree, let sb = b.subtree else { continue }
                try await seed(old: sa, new: sb)
                if map[sa] == nil { whole = false }
            case .symlink, .fifo: break
            }
        }
        if whole { map[o] = n }
    }
}
