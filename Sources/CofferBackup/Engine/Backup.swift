import Foundation
import Synchronization
import CofferCore
import CofferStorage
import CofferPosix

/// A regular file the backup reads (or captures, for a SQLite database).
final class FileJob: @unchecked Sendable {
    let path: String
    var node: TreeNode
    let parentNode: TreeNode?
    var isDatabase: Bool
    var chunkSize = 0
    /// Descriptor of the captured (unlinked) database copy, shared by the file's segments.
    var captureFD: Int32 = -1
    var content: [ChunkID?] = []
    // Guarded by `lock`.
    let lock = NSLock()
    var segmentsLeft = 0
    var failure: String?
    var done = false

    init(path: String, node: TreeNode, parentNode: TreeNode?, isDatabase: Bool) {
        self.path = path
        self.node = node
        self.parentNode = parentNode
        self.isDatabase = isDatabase
    }
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

/// One backup run: walk, read/chunk/hash/compress/encrypt/pack on worker threads, upload with
/// bounded concurrency, write trees, index, snapshot (in that order).
final class BackupRun: @unchecked Sendable {
    let engine: Engine
    let paths: [String]
    let options: BackupOptions
    let continuation: AsyncThrowingStream<BackupEvent, any Error>.Continuation
    let cancelled = Atomic<Bool>(false)
    let counters = Mutex(BackupCounters())
    let claimed = Mutex(Set<ChunkID>())
    let started = ContinuousClock.now
    var uploader: Uploader!
    var packWriters: PackWriterFactory!
    /// The open packs every new blob (data and trees) is assigned to at random.
    var packs: PackPool!
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
    /// Files taken over from the parent unread, and every tree this run encoded: the commit check
    /// (CommitCheck.swift) uploads their blobs again if a prune removed them meanwhile.
    var reusedFiles: [(String, TreeNode)] = []
    let producedTrees = Mutex([ChunkID: [UInt8]]())

    // Work queue.
    let queueLock = NSCondition()
    var queue: [WorkItem] = []
    var queueHead = 0
    var activeWorkers = 0
    var jobsOutstanding = 0

    init(engine: Engine, paths: [String], options: BackupOptions,
         continuation: AsyncThrowingStream<BackupEvent, any Error>.Continuation) {
        self.engine = engine
        self.paths = paths
        self.options = options
        self.continuation = continuation
    }

    var isCancelled: Bool { cancelled.load(ordering: .relaxed) }

    /// Tests only: run after a file's data has been read and before it is checked for changes, keyed
    /// by the file's path (a deterministic point at which a test changes a file "while it is read").
    static let afterFileRead = Mutex<[String: @Sendable () -> Void]>([:])

    func unreadable(_ path: String, _ reason: String) {
        let u = UnreadableFile(path: path, reason: reason)
        counters.withLock { $0.unreadable.append(u) }
        continuation.yield(.unreadable(u))
    }

    /// True when this run is the first to need blob `id` stored (not in the index, not claimed).
    func claim(_ id: ChunkID) -> Bool {
        if engine.location(of: id) != nil { return false }
        return claimed.withLock { $0.insert(id).inserted }
    }

    // MARK: Run (on a dedicated thread)

    func run() throws(BackupError) -> BackupSummary {
        SQLiteCapture.removeStaleCaptures()
        let all: [(ObjectID, Snapshot)]
        do { all = try runBlocking { try await self.engine.loadSnapshots() } } catch { throw Self.wrap(error) }
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
            do { parentRoot = try runBlocking { try await self.engine.readTree(parent.1.root) } } catch {
                parentRoot = nil  // an unreadable parent only costs the shortcut
            }
            parentTime = parent.1.timeSec
        }

        // Orphan packs (uploaded by an interrupted run, never indexed) are adopted, not uploaded again.
        uploader = Uploader(engine: engine, limit: options.uploadConcurrency, checkpointBytes: options.checkpointBytes,
                            checkpointInterval: options.checkpointInterval)
        let adopted = (try? runBlocking { try await self.engine.recoverOrphanPacks() }) ?? []
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
            top = try walkFullPaths(absPaths, parentRoot: parentRoot)
        }
        for p in absPaths where !fullPaths {
            let name = Array(p.split(separator: "/").last!.utf8)
            let parentNode = parentRoot?.nodes.first { $0.name == name }
            switch FileStat.lstat(p) {
            case .failure(let e):
                throw BackupError(.invalidArgument, path: p, message: "cannot back up \(p): \(e)")
            case .success(let st):
                if let entry = walkEntry(path: p, name: name, st: st, parentNode: parentNode) { top.append(entry) }
            }
        }
        continuation.yield(.scanned(files: filesTotal, bytes: bytesTotal))
        if options.dryRun { return dryRunSummary(top, absPaths: absPaths, parentID: parent?.0.hex) }  // nothing written

        // Read, chunk, pack, upload.
        try runWorkers()
        if isCancelled {
            try? packs.flush()
            try? uploader.drain()
            throw BackupError(.cancelled, message: "the backup was cancelled; what was uploaded is indexed and will not be uploaded again")
        }

        FreedMemory.release()  // the workers' buffers, before the trees and the snapshot need new ones

        // Trees, bottom-up, into the same open packs as the data (at random), then the last packs.
        let treeDeflater = Deflater(level: engine.config.parameters.compressionLevel)
        var rootNodes: [TreeNode] = []
        for entry in top {
            if let n = try node(for: entry, deflater: treeDeflater) { rootNodes.append(n) }
        }
        let rootTree = Tree(nodes: rootNodes)
        let rootID = try storeTree(rootTree, deflater: treeDeflater)
        try packs.flush()
        try uploader.drain()
        if isCancelled {
            throw BackupError(.cancelled, message: "the backup was cancelled; what was uploaded is indexed and will not be uploaded again")
        }
        TestHooks.crashPoint("backup-packed")
        // Nothing the snapshot needs may lie only in a pack a prune marked or deleted meanwhile.
        let commitCheck = CommitCheck(run: self)
        let checkedAt: Date
        do { checkedAt = try runBlocking { try await commitCheck.secure() } } catch { throw Self.wrap(error) }

        // Snapshot last.
        let seq = (all.filter { $0.1.writerID == writer }.map(\.1.seq).max() ?? 0) + 1
        let recorded = (try? engine.deviceStore?.heads.heads(repositoryID: engine.repositoryID))??
            .first { $0.writerID == writerHex }
        let finalSeq = max(seq, (recorded?.seq ?? 0) + 1)
        let prev = all.filter { $0.1.writerID == writer }.max { $0.1.seq < $1.1.seq }?.0
        let c = counters.withLock { $0 }
        let summary = SnapshotSummary(files: UInt64(filesTotal - c.unreadable.count), directories: UInt64(directories),
                                      bytesTotal: UInt64(bytesTotal), bytesNew: UInt64(c.bytesNew),
                                      bytesStored: UInt64(uploader.stored), unreadable: UInt64(c.unreadable.count))
        let snap = Snapshot(writerID: writer, seq: finalSeq, prev: prev, parent: parent?.0, timeSec: timeSec, timeNsec: timeNsec,
                            root: rootID, hostname: options.hostname ?? ProcessInfo.processInfo.hostName,
                            paths: absPaths, tags: options.tags, summary: summary, fullPaths: fullPaths)
        let (snapID, snapSize): (ObjectID, Int)
        do {
            (snapID, snapSize) = try runBlocking {
                try await self.engine.writeSealed(snap.encoded(), type: .snapshot) { $0.snapshotName }
            }
        } catch { throw Self.wrap(error) }
        TestHooks.crashPoint("backup-snapshot")
        do {
            try runBlocking {
                try await commitCheck.confirm(snapshotName: snapID.snapshotName, checkedAt: checkedAt)
                await commitCheck.finish()
            }
        } catch { throw Self.wrap(error) }
        engine.snapshotCache.withLock { $0[snapID] = snap }
        if let store = engine.deviceStore {
            try? store.heads.record(DeviceHead(repositoryID: engine.repositoryID, writerID: writerHex, seq: finalSeq, snapshotID: snapID.hex))
        }

        var changed = 0, unchangedRead = 0
        for j in jobs where j.failure == nil {
            guard let p = j.parentNode else { continue }
            if p.content == j.node.content && p.kind == .file { unchangedRead += 1 } else { changed += 1 }
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

    static func wrap(_ error: any Error) -> BackupError {
        if let e = error as? BackupError { return e }
        return BackupError(.storage, message: "\(error)")
    }
}
