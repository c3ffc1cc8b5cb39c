#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The outcome of ``Repository/repairIndex()``.
public struct RepairIndexReport: Sendable, Hashable {
    /// Packs read whole and verified (name hash, authenticated header, every blob).
    public var packsChecked: Int = 0
    /// Packs that verified and are listed by the new index.
    public var packsIndexed: Int = 0
    /// Verified packs that no index listed before (left by an interrupted backup or another writer).
    public var packsAdded: Int = 0
    /// Damaged packs (`data/xx/<id>`): left out of the new index and condemned by a prune mark, so
    /// backups upload their blobs again and `prune` deletes them.
    public var damagedPacks: [String] = []
    /// Packs an index listed that do not exist.
    public var missingPacks: [String] = []
    /// Blobs of damaged packs that still verified, copied into new packs.
    public var blobsSalvaged: Int = 0
    /// Blobs some index or damaged pack named that are now in no pack: lost until a backup uploads
    /// them again (or `repair snapshots` drops the files that need them).
    public var blobsLost: Int = 0
    /// New packs written with the salvaged blobs.
    public var packsWritten: Int = 0
    /// Index objects replaced (superseded and deleted) by the new index.
    public var indexObjectsReplaced: Int = 0
    /// Damaged index objects among them (`index/<id>`).
    public var damagedIndexObjects: [String] = []

    public init() {}
}

/// One snapshot rewritten by ``Repository/repairSnapshots(dryRun:)``.
public struct RepairedSnapshot: Sendable, Hashable {
    /// The snapshot that was replaced (deleted unless a dry run).
    public var oldID: String
    /// The new snapshot (`nil` in a dry run).
    public var newID: String?
    /// Paths (as `ls` shows them) of the files dropped because some of their data is gone, and of
    /// folders whose listing is gone (ending in `/`; restored empty).
    public var lost: [String]
}

/// The outcome of ``Repository/repairSnapshots(dryRun:)``.
public struct RepairSnapshotsReport: Sendable, Hashable {
    public var snapshotsChecked: Int = 0
    /// Snapshots whose data was partly gone, with what was dropped.
    public var repaired: [RepairedSnapshot] = []
    /// Tree blobs written for the rewritten folders.
    public var treesWritten: Int = 0
    public var dryRun = false

    public init() {}
}
