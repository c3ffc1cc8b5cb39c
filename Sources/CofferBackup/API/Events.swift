#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// What a running backup reports, in order: one ``scanned(files:bytes:)`` once the sources have
/// been walked, then ``progress(_:)`` and ``unreadable(_:)`` events, and finally ``finished(_:)``.
/// A failed backup ends the sequence by throwing a ``BackupError`` instead.
public enum BackupEvent: Sendable {
    /// The walk is done: this many regular files with this many bytes will be considered.
    case scanned(files: Int, bytes: Int64)
    /// Periodic progress (several times a second at most).
    case progress(BackupProgress)
    /// A file or directory could not be read; the backup goes on without it.
    case unreadable(UnreadableFile)
    /// The snapshot is written. Check ``BackupSummary/isPartial``.
    case finished(BackupSummary)
}

/// A progress report of a running backup; a UI computes rate and ETA from `bytesDone`, `elapsed`
/// and `bytesTotal`.
public struct BackupProgress: Sendable, Hashable {
    public var filesDone: Int
    public var filesTotal: Int
    /// Bytes of files done so far (unchanged files count with their full size).
    public var bytesDone: Int64
    public var bytesTotal: Int64
    /// Bytes actually read from disk so far.
    public var bytesRead: Int64
    /// Bytes uploaded so far (pack bytes after dedup and compression).
    public var bytesStored: Int64
    /// The file being read, if any.
    public var currentPath: String?
    public var elapsed: Duration

    public init(filesDone: Int, filesTotal: Int, bytesDone: Int64, bytesTotal: Int64, bytesRead: Int64,
                bytesStored: Int64, currentPath: String?, elapsed: Duration) {
        self.filesDone = filesDone
        self.filesTotal = filesTotal
        self.bytesDone = bytesDone
        self.bytesTotal = bytesTotal
        self.bytesRead = bytesRead
        self.bytesStored = bytesStored
        self.currentPath = currentPath
        self.elapsed = elapsed
    }
}

/// A source file or directory that could not be backed up, and why.
public struct UnreadableFile: Sendable, Hashable, Codable {
    public var path: String
    public var reason: String

    public init(path: String, reason: String) {
        self.path = path
        self.reason = reason
    }
}

/// The outcome of a backup.
public struct BackupSummary: Sendable, Hashable {
    /// The new snapshot's id (64 hex digits; the name of `snapshots/<id>`).
    public var snapshotID: String
    /// The parent snapshot used for the unchanged-file shortcut, if any.
    public var parentID: String?
    /// Files not in the parent snapshot.
    public var filesNew: Int
    /// Files in the parent snapshot that were read again and found different (or were re-read because
    /// they could not be shown unchanged and turned out different).
    public var filesChanged: Int
    /// Files whose content is the same as in the parent (shortcut or re-read and equal).
    public var filesUnchanged: Int
    /// Files taken over from the parent by metadata alone, without being read.
    public var filesSkippedByMetadata: Int
    /// SQLite databases captured through the online backup API.
    public var databasesCaptured: Int
    public var directories: Int
    public var symlinks: Int
    /// Total size of all files in the snapshot.
    public var bytesTotal: Int64
    /// Bytes read from disk (database copies count once).
    public var bytesRead: Int64
    /// Plaintext bytes of blobs that were new (not already in the repository).
    public var bytesNew: Int64
    /// Bytes written to the storage in packs (after dedup and compression, with envelope overhead).
    public var bytesStored: Int64
    /// Bytes written to the storage for index and snapshot objects.
    public var metadataBytesStored: Int64
    public var blobsNew: Int
    public var packsWritten: Int
    public var unreadable: [UnreadableFile]
    public var duration: Duration
    /// Blobs uploaded again just before the snapshot was written because a prune had marked or
    /// deleted the packs holding them while this backup ran or was suspended (0 normally).
    public var blobsUploadedAgain: Int
    /// Named pipes stored (as entries; they hold no data).
    public var fifos: Int = 0
    /// Sockets and devices found in the sources: reported, never stored (they hold no data a restore
    /// could recreate). Not a partial backup.
    public var notStored: [UnreadableFile] = []
    /// Files whose size or modification time changed while they were read: stored as read (the
    /// content may mix old and new data, or be cut short of a file that grew); the next backup reads
    /// them again. Not a partial backup.
    public var changedWhileRead: [UnreadableFile] = []
    /// Set only by a dry run (``BackupOptions/dryRun``): every entry that would be stored, with
    /// whether each file would be read. `snapshotID` is empty then; `bytesRead` is what would be read.
    public var dryRunEntries: [BackupPlanEntry]? = nil

    /// True when some files could not be read (the CLI exits with the "partial backup" code).
    public var isPartial: Bool { !unreadable.isEmpty }

    public init(snapshotID: String = "", parentID: String? = nil, filesNew: Int = 0, filesChanged: Int = 0,
                filesUnchanged: Int = 0, filesSkippedByMetadata: Int = 0, databasesCaptured: Int = 0,
                directories: Int = 0, symlinks: Int = 0, bytesTotal: Int64 = 0, bytesRead: Int64 = 0,
                bytesNew: Int64 = 0, bytesStored: Int64 = 0, metadataBytesStored: Int64 = 0, blobsNew: Int = 0,
                packsWritten: Int = 0, unreadable: [UnreadableFile] = [], duration: Duration = .zero,
                blobsUploadedAgain: Int = 0) {
        self.blobsUploadedAgain = blobsUploadedAgain
        self.snapshotID = snapshotID
        self.parentID = parentID
        self.filesNew = filesNew
        self.filesChanged = filesChanged
        self.filesUnchanged = filesUnchanged
        self.filesSkippedByMetadata = filesSkippedByMetadata
        self.databasesCaptured = databasesCaptured
        self.directories = directories
        self.symlinks = symlinks
        self.bytesTotal = bytesTotal
        self.bytesRead = bytesRead
        self.bytesNew = bytesNew
        self.bytesStored = bytesStored
        self.metadataBytesStored = metadataBytesStored
        self.blobsNew = blobsNew
        self.packsWritten = packsWritten
        self.unreadable = unreadable
        self.duration = duration
    }
}

/// What a running restore reports: ``progress(_:)``, ``fileFailed(_:)`` for each file that could not
/// be restored (damaged or missing data; no file with wrong content is ever left), and ``finished(_:)``.
public enum RestoreEvent: Sendable {
    case planned(files: Int, bytes: Int64)
    case progress(RestoreProgress)
    case fileFailed(RestoreFailure)
    case finished(RestoreSummary)
}

public struct RestoreProgress: Sendable, Hashable {
    public var filesDone: Int
    public var filesTotal: Int
    public var bytesDone: Int64
    public var bytesTotal: Int64
    public var currentPath: String?
    public var elapsed: Duration

    public init(filesDone: Int, filesTotal: Int, bytesDone: Int64, bytesTotal: Int64, currentPath: String?, elapsed: Duration) {
        self.filesDone = filesDone
        self.filesTotal = filesTotal
        self.bytesDone = bytesDone
        self.bytesTotal = bytesTotal
        self.currentPath = currentPath
        self.elapsed = elapsed
    }
}

/// A file that was not restored, with the object that failed.
public struct RestoreFailure: Sendable, Hashable {
    /// Path inside the snapshot.
    public var path: String
    /// The damaged or missing object (`data/..`, `blob <id>`), if the failure is the repository's.
    public var object: String?
    public var code: BackupError.Code
    public var message: String
    /// How many files (non-directory entries) this failure leaves unrestored: 1 for a file, every
    /// entry below a folder whose listing cannot be read, 0 for a folder that could not be created
    /// (the files below it fail, and count, on their own).
    public var files: Int

    public init(path: String, object: String?, code: BackupError.Code, message: String, files: Int = 1) {
        self.path = path
        self.object = object
        self.code = code
        self.message = message
        self.files = files
    }
}

public struct RestoreSummary: Sendable, Hashable {
    public var snapshotID: String
    public var filesRestored: Int
    public var directoriesRestored: Int
    public var symlinksRestored: Int
    public var bytesRestored: Int64
    public var failures: [RestoreFailure]
    public var duration: Duration
    /// Named pipes recreated.
    public var fifosRestored: Int
    /// Files restored as hard links to another restored file (they are also in `filesRestored`).
    public var hardLinksRestored: Int

    public var isComplete: Bool { failures.isEmpty }
    /// Every file (non-directory entry) of the selection that was not restored, those below a folder
    /// listing that cannot be read included.
    public var filesNotRestored: Int { failures.reduce(0) { $0 + $1.files } }

    public init(snapshotID: String = "", filesRestored: Int = 0, directoriesRestored: Int = 0, symlinksRestored: Int = 0,
                bytesRestored: Int64 = 0, failures: [RestoreFailure] = [], duration: Duration = .zero,
                fifosRestored: Int = 0, hardLinksRestored: Int = 0) {
        self.fifosRestored = fifosRestored
        self.hardLinksRestored = hardLinksRestored
        self.snapshotID = snapshotID
        self.filesRestored = filesRestored
        self.directoriesRestored = directoriesRestored
        self.symlinksRestored = symlinksRestored
        self.bytesRestored = bytesRestored
        self.failures = failures
        self.duration = duration
    }
}

/// Progress of a long repository-wide job (`check(readData: true)`, `prune`): which step, how many
/// of its items (packs, objects) are done, and their stored bytes when known.
public struct WorkProgress: Sendable, Hashable {
    /// The step under way, for people ("reading packs", "repacking", "deleting").
    public var step: String
    /// What ``done`` and ``total`` count: "packs" or "objects".
    public var unit: String
    public var done: Int
    public var total: Int
    public var bytesDone: Int64
    public var bytesTotal: Int64
    public var elapsed: Duration

    public init(step: String, unit: String, done: Int, total: Int, bytesDone: Int64, bytesTotal: Int64, elapsed: Duration) {
        self.step = step
        self.unit = unit
        self.done = done
        self.total = total
        self.bytesDone = bytesDone
        self.bytesTotal = bytesTotal
        self.elapsed = elapsed
    }
}
