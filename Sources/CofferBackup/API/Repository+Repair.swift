#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

extension Repository {
    /// Rebuilds the index from the packs that verify (each read whole: name hash, header, every
    /// blob). Blobs of damaged packs that still verify are copied into new packs; the damaged packs
    /// are condemned by a prune mark, so the next backup uploads what they held again and `prune`
    /// deletes them; every index object read is replaced by one new index. Run it when no prune
    /// runs elsewhere. See docs/CLI.md, "coffer repair".
    /// - Throws: `.storage`, `.dataDamaged` (a damaged prune mark).
    public func repairIndex() async throws(BackupError) -> RepairIndexReport {
        try await engine.repairIndex()
    }

    /// Rewrites the snapshots that need data the index does not have or a folder listing that cannot
    /// be read: such files are dropped (and listed), such folders kept empty, the rest kept. Run
    /// ``repairIndex()`` first (and a backup, which uploads again what its sources still have).
    /// With `dryRun`, only reports what would be dropped.
    /// - Throws: `.staleRepository`, `.dataDamaged` (a damaged snapshot object), `.storage`.
    public func repairSnapshots(dryRun: Bool = false) async throws(BackupError) -> RepairSnapshotsReport {
        try await engine.repairSnapshots(dryRun: dryRun)
    }

    /// Frees space on a storage too full to write to: deletes packs no index lists and no snapshot
    /// needs, and temporary files of unfinished writes, without writing anything first (no index,
    /// no mark, no clock object). Unsafe with other writers: it has no grace period, so the
    /// unindexed packs of a backup running elsewhere go too. Then run ``prune(mode:)`` as usual.
    /// - Throws: `.dataMissing` / `.dataDamaged` (nothing changed), `.staleRepository`, `.storage`.
    public func pruneUnindexedWithoutWriting() async throws(BackupError) -> PruneReport {
        try await engine.pruneUnindexedWithoutWriting()
    }
}
