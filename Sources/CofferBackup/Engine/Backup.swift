import Foundation
import Synchronization
import CofferCore
import CofferStorage
import CofferPosix

/// A regular file the backup reads (or captures, for a SQLite database). Shared by the workers
/// that read its segments; what they change is behind its mutex.
final class FileJob: Sendable {
    let path: String
    let parentNode: TreeNode?
    let isDatabase: Bool

    struct State {
        var node: TreeNode
        var chunkSize = 0
        /// Descriptor of the captured (unlinked) database copy, shared by the file's segments.
        var captureFD: Int32 = -1
        var content: [ChunkID?] = []
        var segmentsLeft = 0
        var failure: String?
        var done = false
    }
    let state: Mutex<State>

    init(path: String, node: TreeNode, parentNode: TreeNode?, isDatabase: Bool) {
        self.path = path
        self.parentNode = parentNode
        self.isDatabase = isDatabase
        state = Mutex(State(node: node))
    }

    var node: TreeNode { state.withLock { $0.node } }
    var failure: String? { state.withLock { $0.failure } }
}

/// One entry found by the walk.
enum ScanEntry {
    case file(FileJob)
    case reused(TreeNode)
    case symlink(TreeNode)
    case directory(ScanDir)
}

final class ScanDir {
    var node: TreeNode
    var children: [ScanEntry] = []
    init(node: TreeNode) { self.node = node }
}

enum WorkItem {
    case capture(FileJob)
    case segment(FileJob, Range<Int>)
}

/// Counters shared by the workers and the progress reporter.
struct BackupCounters {
    var filesDone = 0
    var bytesDone: Int64 = 0
    var bytesRead: Int64 = 0
    var bytesNew: Int64 = 0
    var blobsNew = 0
    var currentPath: String?
    var unreadable: [UnreadableFile] = []
    var databasesCaptured = 0
    var changedWhileRead: [UnreadableFile] = []
}

/// What a backup run's concurrent stages share (the workers, the upload tasks, the progress
/// task): only immutable values and state behind a mutex or an atomic.
final class BackupPipeline: Sendable {
    let engine: Engine
    let options: BackupOptions
    let events: @Sendable (BackupEvent) -> Void
    let cancel: CancelFlag
    let counters = Mutex(BackupCounters())
    let claimed = Mutex(Set<ChunkID>())
    let started = ContinuousClock.now
    /// Every tree this run encoded: the commit check (CommitCheck.swift) uploads them again if a
    /// prune removed them meanwhile.
    let producedTrees = Mutex([ChunkID: [UInt8]]())
    /// Files and bytes the walk found (set once the walk is done; for progress).
    let totals = Mutex((files: 0, bytes: Int64(0)))
    let uploader: Uploader
    /// The open packs every new blob (data and trees) is assigned to at random.
    let packs: PackPool
    let queue = WorkQueue<WorkItem>()
    let workerCount: Int

    init(engine: Engine, options: BackupOptions, cancel: CancelFlag, events: @escaping @Sendable (BackupEvent) -> Void) {
        self.engine = engine
        self.options = options
        self.cancel = cancel
        self.events = events
        let params = engine.config.parameters
        uploader = Uploader(engine: engine, limit: options.uploadConcurrency, checkpointBytes: options.checkpointBytes,
                            checkpointInterval: options.checkpointInterval)
        workerCount = max(1, min(ProcessInfo.processInfo.activeProcessorCount, 8))
        packs = PackPool(count: workerCount, target: params.targetPackSize, uploader: uploader,
                         factory: PackWriterFactory(keys: engine.keys, parameters: params))
    }

    /// Cancelled by the caller (the stream's consumer went away, or the calling task was cancelled).
    var isCancelled: Bool { cancel.isSet || Task.isCancelled }

    /// Tests only: run after a file's data has been read and before it is checked for changes, keyed
    /// by the file's path (a deterministic point at which a test changes a file "while it is read").
    static let afterFileRead = Mutex<[String: @Sendable () -> Void]>([:])

    func unreadable(_ path: String, _ reason: String) {
        let u = UnreadableFile(path: path, reason: reason)
        counters.withLock { $0.unreadable.append(u) }
        events(.unreadable(u))
    }

    /// True when this run is the first to need blob `id` stored (not in the index, not claimed).
    func claim(_ id: ChunkID) -> Bool {
        if engine.location(of: id) != nil { return false }
        return claimed.withLock { $0.insert(id).inserted }
    }
}

/// Set when a backup is to stop at the next item: the packs uploaded so far are indexed, no
/// snapshot is written.
final class CancelFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    init() {}
    func set() { flag.store(true, ordering: .relaxed) }
    var isSet: Bool { flag.load(ordering: .relaxed) }
}

/// One backup run, in its stages: walk (Backup+Scan), read/chunk/hash/compress/encrypt/pack in a
/// task group of workers and upload tasks (Backup+Chunk, PackPool, Uploader), trees
/// (Backup+Trees), index, commit check and snapshot (below). The walk's results belong to the
/// run's own task; what the concurrent stages share is the ``BackupPipeline``.
final class BackupRun {
    let pipe: BackupPipeline
    let paths: [String]
    var engine: Engine { pipe.engine }
    var options: BackupOptions { pipe.options }
    var uploader: Uploader { pipe.uploader }
    var packs: PackPool { pipe.packs }
    var started: ContinuousClock.Instant { pipe.started }
    var isCancelled: Bool { pipe.isCancelled }
    /// --exclude and the other filters (BackupFilter.swift).
    lazy var filterRun: FilterRun? = options.filter.map { FilterRun($0, targets: paths.map(Posix.absolute)) }

    // Walk results.
    var filesTotal = 0
    var bytesTotal: Int64 = 0
    var filesNew = 0, filesSkipped = 0, directories = 0, symlinks = 0, fifos = 0
    /// Sockets and devices met by the walk (reported, not stored).
    var notStored: [UnreadableFile] = []
    var jobs: [FileJob] = []
    var parentTime: Int64 = Int64.min
    /// Files taken over from the parent unread: the commit check (CommitCheck.swift) reads them
    /// again if a prune removed their blobs meanwhile.
    var reusedFiles: [(String, TreeNode)] = []

    init(pipe: BackupPipeline, paths: [String]) {
        self.pipe = pipe
        self.paths = paths
    }

    func unreadable(_ path: String, _ reason: String) { pipe.unreadable(path, reason) }
    func claim(_ id: ChunkID) -> Bool { pipe.claim(id) }

    // MARK: Run (on the I/O executor)

    func run() async throws(BackupError) -> BackupSummary {
        SQLiteCapture.removeStaleCaptures()
        let all: [(ObjectID, Snapshot)]
        all = try await engine.loadSnapshots()
        try engine.verifyHeads(all, doing: "back up onto this repository")

        let writerHex: String
        if let store = engine.deviceStore {
            do { writerHex = try store.writerID() } catch { throw BackupError(.fileSystem, message: "\(error)") }
        } else {
            writerHex = Hex.string((0..<16).map { _ in UInt8.random(in: 0...255) })
        }
        let writer = Hex.bytes(writerHex) ?? []
        var absPaths: [String] = []
        for p in paths.map({ Posix.absolute($0) }) where !absPaths.contains(p) { absPaths.append(p) }
        guard !absPaths.isEmpty else { throw BackupError(.invalidArgument, message: "nothing to back up: give at least one path") }
        var names = Set<String>()
        var fullPaths = false
        for p in absPaths {
            guard p != "/" else { throw BackupError(.invalidArgument, path: p, message: "cannot back up / as a whole; name the folders to back up") }
            if !names.insert(String(p.split(separator: "/").last!)).inserted { fullPaths = true }
        }
        // Sources whose last names differ are stored under those names (TARGET/<name> on restore);
        // when two share a last name, the root mirrors the absolute paths instead (TARGET/<path>).
        if fullPaths {
            for a in absPaths {
                if let b = absPaths.first(where: { $0.hasPrefix(a + "/") }) {
                    throw BackupError(.invalidArgument, path: b, message: "\(b) is inside \(a), and two paths share a last name: "
                                      + "with sources stored by their full paths, give \(a) alone (it holds \(b))")
                }
            }
        }

        // Parent: chosen, else this writer's newest with the same paths, else anyone's newest with the same paths.
        var parent: (ObjectID, Snapshot)?
        if !options.force {
            if let sel = options.parent {
                parent = try engine.resolve(sel, in: all)
            } else {
                let same = all.filter { Set($0.1.paths) == Set(absPaths) }
                parent = same.last { $0.1.writerID == writer } ?? same.last
            }
        }
        var parentRoot: Tree?
        if let parent {
            parentRoot = try? await engine.readTree(parent.1.root)  // an unreadable parent only costs the shortcut
            parentTime = parent.1.timeSec
        }

        // Orphan packs (uploaded by an interrupted run, never indexed) are adopted, not uploaded again.
        let adopted = (try? await engine.recoverOrphanPacks()) ?? []
        if !adopted.isEmpty {
            uploader.adopt(adopted)
            engine.index.withLock { for p in adopted { $0.add(p) } }
        }

        let now = options.time ?? Date()
        let timeSec = Int64(now.timeIntervalSince1970.rounded(.down))
        let timeNsec = UInt32(max(0, min(999_999_999, (now.timeIntervalSince1970 - Double(timeSec)) * 1e9)))

        // Walk.
        var top: [ScanEntry] = []
        if fullPaths {
            top = try await walkFullPaths(absPaths, parentRoot: parentRoot)
        }
        for p in absPaths where !fullPaths {
            let name = Array(p.split(separator: "/").last!.utf8)
            let parentNode = parentRoot?.nodes.first { $0.name == name }
            switch FileStat.lstat(p) {
            case .failure(let e):
                throw BackupError(.invalidArgument, path: p, message: "cannot back up \(p): \(e)")
            case .success(let st):
                if let entry = await walkEntry(path: p, name: name, st: st, parentNode: parentNode) { top.append(entry) }
            }
        }
        pipe.totals.withLock { $0 = (filesTotal, bytesTotal) }
        pipe.events(.scanned(files: filesTotal, bytes: bytesTotal))
        if options.dryRun { return dryRunSummary(top, absPaths: absPaths, parentID: parent?.0.hex) }  // nothing written

        // Read, chunk, pack and upload; then the trees, bottom-up, into the same open packs as the
        // data (at random), then the last packs: all while the upload tasks run.
        let rootID = try await packAndUpload(top)
        if isCancelled {
            throw Self.cancelled
        }
        TestHooks.crashPoint("backup-packed")
        // Nothing the snapshot needs may lie only in a pack a prune marked or deleted meanwhile.
        let commitCheck = CommitCheck(run: self)
        let checkedAt: Date
        checkedAt = try await commitCheck.secure()

        // Snapshot last.
        let seq = (all.filter { $0.1.writerID == writer }.map(\.1.seq).max() ?? 0) + 1
        let recorded = (try? engine.deviceStore?.heads.heads(repositoryID: engine.repositoryID))??
            .first { $0.writerID == writerHex }
        let finalSeq = max(seq, (recorded?.seq ?? 0) + 1)
        let prev = all.filter { $0.1.writerID == writer }.max { $0.1.seq < $1.1.seq }?.0
        let c = pipe.counters.withLock { $0 }
        let summary = SnapshotSummary(files: UInt64(filesTotal - c.unreadable.count), directories: UInt64(directories),
                                      bytesTotal: UInt64(bytesTotal), bytesNew: UInt64(c.bytesNew),
                                      bytesStored: UInt64(uploader.stored), unreadable: UInt64(c.unreadable.count))
        let snap = Snapshot(writerID: writer, seq: finalSeq, prev: prev, parent: parent?.0, timeSec: timeSec, timeNsec: timeNsec,
                            root: rootID, hostname: options.hostname ?? ProcessInfo.processInfo.hostName,
                            paths: absPaths, tags: options.tags, summary: summary, fullPaths: fullPaths)
        let (snapID, snapSize): (ObjectID, Int)
        (snapID, snapSize) = try await engine.writeSealed(snap.encoded(), type: .snapshot) { $0.snapshotName }
        TestHooks.crashPoint("backup-snapshot")
        try await commitCheck.confirm(snapshotName: snapID.snapshotName, checkedAt: checkedAt)
        await commitCheck.finish()
        engine.snapshotCache.withLock { $0[snapID] = snap }
        if let store = engine.deviceStore {
            try? store.heads.record(DeviceHead(repositoryID: engine.repositoryID, writerID: writerHex, seq: finalSeq, snapshotID: snapID.hex))
        }

        var changed = 0, unchangedRead = 0
        for j in jobs where j.failure == nil {
            guard let p = j.parentNode else { continue }
            let node = j.node
            if p.content == node.content && p.kind == .file { unchangedRead += 1 } else { changed += 1 }
        }
        var result = BackupSummary(
            snapshotID: snapID.hex, parentID: parent?.0.hex, filesNew: filesNew, filesChanged: changed,
            filesUnchanged: filesSkipped + unchangedRead, filesSkippedByMetadata: filesSkipped,
            databasesCaptured: c.databasesCaptured, directories: directories, symlinks: symlinks, bytesTotal: bytesTotal,
            bytesRead: c.bytesRead, bytesNew: c.bytesNew, bytesStored: uploader.stored,
            metadataBytesStored: uploader.metadataBytes + Int64(snapSize), blobsNew: c.blobsNew,
            packsWritten: uploader.packsWritten, unreadable: c.unreadable, duration: ContinuousClock.now - started,
            blobsUploadedAgain: commitCheck.copied + commitCheck.reread)
        result.fifos = fifos
        result.notStored = notStored
        result.changedWhileRead = c.changedWhileRead
        return result
    }

    /// A cancelled backup (the caller's task, or the event stream's consumer went away). Its packs
    /// stay: indexed by the last checkpoint or the final drain, or, when that index could not be
    /// written, adopted from storage by the next backup (``Engine/recoverOrphanPacks()``).
    static let cancelled = BackupError(.cancelled, message: "the backup was cancelled before its snapshot; the packs it uploaded "
                                        + "stay, and the next backup does not upload them again")
}
