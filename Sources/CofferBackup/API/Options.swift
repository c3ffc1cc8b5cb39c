#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CofferCore

/// Parameters chosen when a repository is created (stored in its authenticated config).
public struct RepositoryOptions: Sendable, Hashable {
    /// Fixed chunk size for ordinary files (media never changes once written).
    public var fileChunkSize: Int = 1 << 20
    /// Size of a page-aligned group of SQLite pages. One page (4 KiB) by default: scattered edits
    /// of a chat database touch single pages, and measured on the benchmark dataset a day's
    /// changes stored 8.9 MB with 4 KiB groups against 14.3 MB with 16 KiB and 27.1 MB with 64 KiB.
    public var sqliteGroupSize: Int = 4 << 10
    /// Packs are closed once they hold about this many bytes. 2 MiB by default: a backup holds
    /// several pack buffers at once (open packs and uploads in flight), so this sets most of its
    /// memory; on the chat dataset peak RSS was 139-142 MiB with 16 MiB packs, 88-101 MiB with
    /// 8 MiB, 66-78 MiB with 4 MiB and 58-62 MiB with 2 MiB, at the same speed. Phones cap
    /// background memory. Remote storage may prefer ``defaultRemotePackSize`` (fewer requests).
    public var targetPackSize: Int = RepositoryOptions.defaultTargetPackSize
    /// Size padding of everything stored (packs, index, snapshots): Padmé by default, so the storage
    /// provider cannot tell blob or object lengths (docs/THREAT_MODEL.md). ``PaddingScheme/none``
    /// only for comparison (benchmarks) or storage that is trusted.
    public var padding: PaddingScheme = .padme
    /// Smallest stored object with padding (1 MiB by default; 0 without padding).
    public var paddingFloor: Int = PaddingPolicy.defaultFloor

    /// The default target pack size (2 MiB).
    public static let defaultTargetPackSize = 2 << 20
    /// The target pack size the `coffer` CLI uses for S3 repositories (4 MiB): half as many
    /// requests, each with a network round trip and a per-request price, for 8 MiB more memory.
    public static let defaultRemotePackSize = 4 << 20

    public init(fileChunkSize: Int = 1 << 20, sqliteGroupSize: Int = 4 << 10, targetPackSize: Int = RepositoryOptions.defaultTargetPackSize,
                padding: PaddingScheme = .padme, paddingFloor: Int? = nil) {
        self.fileChunkSize = fileChunkSize
        self.sqliteGroupSize = sqliteGroupSize
        self.targetPackSize = targetPackSize
        self.padding = padding
        self.paddingFloor = paddingFloor ?? (padding == .none ? 0 : PaddingPolicy.defaultFloor)
    }
}

/// How one backup runs.
public struct BackupOptions: Sendable {
    /// The snapshot whose file metadata lets unchanged files be skipped. `nil` picks this writer's
    /// newest snapshot with the same set of paths (or, failing that, the newest with the same paths).
    public var parent: String? = nil
    /// Never use a parent: read every file again (dedup still avoids uploading known chunks).
    public var force: Bool = false
    /// Recorded in the snapshot; defaults to the host name.
    public var hostname: String? = nil
    /// Free-form tags recorded in the snapshot.
    public var tags: [String] = []
    /// Write an index checkpoint after this many new bytes have been packed (at most 64 MiB).
    public var checkpointBytes: Int = 64 << 20
    /// ... or after this much time since the previous checkpoint (at most 60 s).
    public var checkpointInterval: Duration = .seconds(60)
    /// The snapshot's time; `nil` means now (tests and imports set it).
    public var time: Date? = nil
    /// How many packs may be uploading at once (a slow backend must not stall chunking).
    public var uploadConcurrency: Int = 3
    /// How SQLite databases are captured. ``DatabaseCapture/compacted`` keeps deleted messages out
    /// of the snapshot (no freelist pages, no slack bytes), at some cost in bytes stored per run.
    public var databaseCapture: DatabaseCapture = .pageCopy
    /// Where the private (0700) folder of a database capture is made; `nil` is the system's
    /// temporary directory. An app may point it at a folder with its own data protection class.
    public var captureDirectory: String? = nil
    /// What to leave out (`--exclude`, `--exclude-caches`, `--one-file-system`...): restic's rules.
    public var filter: BackupFilter? = nil
    /// Only walk the paths and report what would be stored (``BackupSummary/dryRunEntries``):
    /// nothing is read, packed or written, and no snapshot is made.
    public var dryRun: Bool = false

    public init(parent: String? = nil, force: Bool = false, hostname: String? = nil, tags: [String] = [],
                checkpointBytes: Int = 64 << 20, checkpointInterval: Duration = .seconds(60),
                time: Date? = nil, uploadConcurrency: Int = 3, databaseCapture: DatabaseCapture = .pageCopy) {
        self.parent = parent
        self.force = force
        self.hostname = hostname
        self.tags = tags
        self.checkpointBytes = checkpointBytes
        self.checkpointInterval = checkpointInterval
        self.time = time
        self.uploadConcurrency = uploadConcurrency
        self.databaseCapture = databaseCapture
    }
}

/// How a backup captures a live SQLite database (always consistently, in one read transaction).
public enum DatabaseCapture: String, Sendable, Hashable, CaseIterable {
    /// SQLite's online backup API in one step: an exact page-for-page copy. Unchanged pages keep
    /// their ids from one snapshot to the next (the best deduplication), but the freelist and the
    /// unused bytes inside pages can still hold the text of deleted rows.
    case pageCopy = "page-copy"
    /// `VACUUM INTO`: a freshly built copy with no freelist pages and no leftover bytes of deleted
    /// rows, so a message deleted before the backup is not in its snapshot. Pages are renumbered,
    /// which costs deduplication (docs/ENGINE.md has the figures).
    case compacted = "compacted"
}

/// How a restore runs.
public struct RestoreOptions: Sendable {
    /// Restore only these snapshot paths (and everything below them), e.g. `["Media/Images"]`.
    /// Paths are relative to the snapshot root as ``Repository/list(snapshot:path:recursive:)`` shows them,
    /// or absolute as they were on the machine backed up (below one of the snapshot's paths).
    public var include: [String] = []
    /// Allow restoring into a non-empty target; existing files with the same names are replaced
    /// (each only after its new content is fully verified).
    public var overwrite: Bool = false

    public init(include: [String] = [], overwrite: Bool = false) {
        self.include = include
        self.overwrite = overwrite
    }
}

/// How ``Repository/prune(mode:)`` deletes.
public enum PruneMode: Sendable, Hashable {
    /// Two phases: this run marks what is no longer needed (and deletes what earlier marks made
    /// eligible); objects are deleted by a later run once `grace` has passed, measured by the
    /// storage's own timestamps (never the device clock). Safe with other writers.
    case twoPhase(grace: Duration)
    /// The user asserts that nothing else writes to this repository: mark and delete at once.
    case singleWriterNow

    /// The default grace period of two-phase prune.
    public static let defaultGrace: Duration = .seconds(24 * 3600)
}
