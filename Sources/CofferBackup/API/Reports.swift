#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// One snapshot as listed by ``Repository/snapshots()``.
public struct SnapshotInfo: Sendable, Hashable, Identifiable {
    /// 64 hex digits: the SHA-256 of the sealed snapshot object, its name under `snapshots/`.
    public var id: String
    public var time: Date
    /// The writer (device) that made it, 32 hex digits, and its per-writer sequence number.
    public var writerID: String
    public var seq: UInt64
    /// The id of the same writer's previous snapshot, if any.
    public var prev: String?
    public var hostname: String
    /// The absolute source paths as given to backup; each is an entry of the snapshot root
    /// named by its last component.
    public var paths: [String]
    public var tags: [String]
    public var summary: SnapshotSummary

    /// The first 8 hex digits, as shown in lists.
    public var shortID: String { String(id.prefix(8)) }

    public init(id: String, time: Date, writerID: String, seq: UInt64, prev: String?, hostname: String,
                paths: [String], tags: [String], summary: SnapshotSummary) {
        self.id = id
        self.time = time
        self.writerID = writerID
        self.seq = seq
        self.prev = prev
        self.hostname = hostname
        self.paths = paths
        self.tags = tags
        self.summary = summary
    }
}

/// Figures recorded inside a snapshot.
public struct SnapshotSummary: Sendable, Hashable {
    public var files: UInt64
    public var directories: UInt64
    public var bytesTotal: UInt64
    public var bytesNew: UInt64
    public var bytesStored: UInt64
    public var unreadable: UInt64

    public init(files: UInt64 = 0, directories: UInt64 = 0, bytesTotal: UInt64 = 0, bytesNew: UInt64 = 0,
                bytesStored: UInt64 = 0, unreadable: UInt64 = 0) {
        self.files = files
        self.directories = directories
        self.bytesTotal = bytesTotal
        self.bytesNew = bytesNew
        self.bytesStored = bytesStored
        self.unreadable = unreadable
    }
}

/// One entry of a snapshot as ``Repository/list(snapshot:path:recursive:)`` shows it.
public struct NodeInfo: Sendable, Hashable {
    public enum Kind: String, Sendable, Hashable, Codable {
        case file, directory, symlink
        /// A named pipe.
        case fifo
    }

    /// Path inside the snapshot (`name/sub/file`), `/`-separated, no leading slash.
    public var path: String
    public var kind: Kind
    /// Content size for files, 0 otherwise.
    public var size: Int64
    /// Permission bits (`0o644`...).
    public var mode: UInt32
    public var modified: Date
    /// Target of a symlink.
    public var linkTarget: String?
    /// True for SQLite databases captured through the online backup API.
    public var isDatabase: Bool

    public init(path: String, kind: Kind, size: Int64, mode: UInt32, modified: Date, linkTarget: String?, isDatabase: Bool) {
        self.path = path
        self.kind = kind
        self.size = size
        self.mode = mode
        self.modified = modified
        self.linkTarget = linkTarget
        self.isDatabase = isDatabase
    }
}

/// What ``Repository/check(readData:)`` found.
public struct CheckReport: Sendable, Hashable {
    public var snapshotsChecked: Int = 0
    public var treesChecked: Int = 0
    public var indexObjectsChecked: Int = 0
    public var packsChecked: Int = 0
    /// Blobs decrypted and verified (only with `readData`).
    public var blobsVerified: Int = 0
    /// Packs present in storage that no index lists (left by an interrupted backup or prune; not
    /// an error: prune removes them after the grace period).
    public var unindexedPacks: [String] = []
    /// Temporary files of unfinished writes in a local repository folder (`data/3f/.3fa1….~tmp`):
    /// left by a writer that was killed or interrupted, or of a write in progress. Not an error:
    /// prune removes those older than its grace period.
    public var temporaryFiles: [String] = []
    /// Conflict copies a syncing drive made in a local repository folder (iCloud Drive's
    /// `data/3f/3fa1… 2`): never data, the object under its own name is authoritative. Not an
    /// error; they can be deleted.
    public var conflictCopies: [String] = []
    /// Every damaged or missing object, each named.
    public var problems: [CheckProblem] = []

    public var isClean: Bool { problems.isEmpty }

    public init() {}
}

/// One damaged or missing object found by ``Repository/check(readData:)``.
public struct CheckProblem: Sendable, Hashable {
    public enum Kind: String, Sendable, Hashable {
        /// The object exists but failed verification.
        case damaged
        /// The object is referred to but does not exist.
        case missing
    }

    public var kind: Kind
    /// `data/ab/<id>`, `index/<id>`, `snapshots/<id>`, or `blob <id> (tree|data)`.
    public var object: String
    /// What failed, and which snapshots or files are affected where known.
    public var detail: String

    public init(kind: Kind, object: String, detail: String) {
        self.kind = kind
        self.object = object
        self.detail = detail
    }
}

/// The outcome of ``Repository/prune(mode:)``.
public struct PruneReport: Sendable, Hashable {
    /// Live snapshots whose every blob was located before anything was marked or deleted.
    public var liveSnapshots: Int = 0
    /// Packs still fully or partly needed.
    public var packsKept: Int = 0
    /// Partly used packs whose live blobs were copied into new packs.
    public var packsRepacked: Int = 0
    /// Packs (and index objects) marked for deletion by this run.
    public var objectsMarked: Int = 0
    /// Objects deleted by this run.
    public var objectsDeleted: Int = 0
    /// Stored bytes of the objects this run deleted (packs, superseded index objects, marks of
    /// earlier runs), at the sizes the storage listed: what really went.
    public var bytesFreed: Int64 = 0
    /// Marked objects still waiting for their grace period to pass.
    public var objectsPending: Int = 0
    /// Marked packs that a snapshot made after the mark turned out to need, and that were kept.
    public var packsRescued: Int = 0
    /// Temporary files of unfinished writes removed (local folders; those older than the grace period).
    public var temporaryFilesRemoved: Int = 0

    public init() {}
}
