#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CofferCore
import CofferStorage

/// Rollback checks: known heads (device and vault) against the snapshots the storage shows, and a
/// snapshot's blobs against the index before a restore writes anything.
extension Engine {
    /// The refusal when a known head is newer than what the repository shows, or its snapshot is hidden.
    static func staleHeadError(_ h: DeviceHead, newest: (ObjectID, Snapshot)?, doing what: String) -> BackupError {
        let shown: String
        if let n = newest {
            shown = n.1.seq == h.seq ? "seq \(n.1.seq) but as another snapshot (\(n.0.hex.prefix(8)))"
                                     : "only up to seq \(n.1.seq) (snapshot \(n.0.hex.prefix(8)))"
        } else {
            shown = "no snapshot of it at all"
        }
        return BackupError(.staleRepository, object: "snapshots/\(h.snapshotID)",
                           message: "refusing to \(what): the storage provider is serving old or incomplete data. "
                            + "Snapshot \(h.snapshotID.prefix(8)) (writer \(h.writerID.prefix(8)), seq \(h.seq)) is known to exist, "
                            + "but the repository shows \(shown). Nothing was changed. "
                            + "Point Coffer at the current copy of the repository (or ask the storage provider to restore it); "
                            + "do not back up onto or prune this copy")
    }

    /// Heads learnt elsewhere (the vault): checked from now on, and kept in the device's head store.
    func adopt(_ heads: [DeviceHead]) throws(BackupError) {
        let mine = heads.filter { $0.repositoryID == repositoryID }
        adoptedHeads.withLock { $0 += mine }
        guard let deviceStore else { return }
        for h in mine {
            do { try deviceStore.heads.record(h) } catch {
                throw BackupError(.fileSystem, message: "cannot record the anchored head on this device: \(error)")
            }
        }
    }

    /// Before a restore writes anything: every tree and data blob of the snapshot must be in the
    /// index. A snapshot is written only after the index that lists its blobs, so a blob no index
    /// lists means the storage serves an old index (or hides index objects): refused as stale rather
    /// than left as half a restore. With a damaged index object the restore goes ahead and reports
    /// the files it cannot restore (damage, not staleness).
    func requireIndexed(_ snapID: ObjectID, _ snap: Snapshot) async throws(BackupError) {
        if !index.withLock({ $0.damagedIndexObjects.isEmpty }) { return }
        var missing: [ChunkID] = []
        var pending: [ChunkID] = [snap.root]
        while let treeID = pending.popLast() {
            guard location(of: treeID) != nil else {
                missing.append(treeID)
                continue
            }
            // A damaged tree is a restore failure of the files below it, reported by the restore.
            guard let tree = try? await readTree(treeID) else { continue }
            for n in tree.nodes {
                if let sub = n.subtree { pending.append(sub) }
                for c in n.content where location(of: c) == nil {
                    missing.append(c)
                }
            }
        }
        guard let first = missing.first else { return }
        throw BackupError(.staleRepository, object: "blob \(first.hex)",
                          message: "refusing to restore snapshot \(snapID.hex.prefix(8)): the storage provider is serving old or "
                            + "incomplete data: \(missing.count) of the snapshot's blobs are in no index object (first: \(first.hex.prefix(16))), "
                            + "so its index is older than the snapshot. Nothing was restored. Point Coffer at the current copy of the "
                            + "repository (or ask the storage provider to restore its index objects), then restore again")
    }
}

extension Repository {
    /// Adds heads known from outside the storage, typically the vault's anchored heads
    /// (`VaultClient.readHeads`): every later backup, restore, forget and prune of this repository
    /// refuses when the storage shows an older head or hides the snapshot a head names
    /// (`.staleRepository`). With a device store they are also recorded there, so later runs check
    /// them without the vault. Heads of other repositories are ignored.
    /// - Throws: `.fileSystem` when the device's head file cannot be written.
    public func adoptHeads(_ heads: [DeviceHead]) throws(BackupError) {
        try engine.adopt(heads)
    }

    /// Checks now that the storage shows no older head than the device store and adopted heads
    /// know (and records the newest heads it shows). Returns the newest snapshot of each writer.
    /// - Throws: `.staleRepository` (the storage provider is serving old or incomplete data),
    ///   `.dataDamaged`, `.storage`.
    /// - Parameter what: the refused action as the error names it ("restore from this repository").
    @discardableResult
    public func verifyHeads(doing what: String = "use this repository") async throws(BackupError) -> [SnapshotInfo] {
        let all = try await engine.loadSnapshots()
        try engine.verifyHeads(all, doing: what)
        var newest: [[UInt8]: (ObjectID, Snapshot)] = [:]
        for (id, s) in all where (newest[s.writerID]?.1.seq ?? 0) <= s.seq { newest[s.writerID] = (id, s) }
        return newest.values.map { Engine.info($0.0, $0.1) }.sorted { $0.time < $1.time }
    }
}
