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

    // MARK: Walk

    func makeNode(_ name: [UInt8], _ kind: TreeNode.Kind, _ st: FileStat) -> TreeNode {
        var n = TreeNode(name: name, kind: kind)
        st.apply(to: &n)
        return n
    }

    func walkEntry(path: String, name: [UInt8], st: FileStat, parentNode: TreeNode?) -> ScanEntry? {
        switch filterRun?.decide(path: path, st) ?? .include {
        case .exclude: return nil
        case .emptyDirectory: directories += 1; return .directory(ScanDir(node: makeNode(name, .directory, st)))
        case .include: break
        }
        guard TreeNode.validName(name) else {
            unreadable(path, "file name cannot be stored")
            return nil
        }
        switch st.kind {
        case .regular:
            return walkFile(path: path, name: name, st: st, parentNode: parentNode?.kind == .file ? parentNode : nil)
        case .symlink:
            do {
                var n = makeNode(name, .symlink, st)
                n.linkTarget = try Posix.readlink(path)
                symlinks += 1
                return .symlink(n)
            } catch {
                unreadable(path, "cannot read symlink: \(error)")
                return nil
            }
        case .directory:
            return walkDirectory(path: path, name: name, st: st, parentNode: parentNode?.kind == .directory ? parentNode : nil)
        case .other where st.isFIFO:
            fifos += 1
            return .symlink(makeNode(name, .fifo, st))  // an entry without content, like a symlink
        case .other:
            // Sockets and devices hold no data to back up; say so instead of dropping them silently.
            notStored.append(UnreadableFile(path: path, reason: "a socket or device file is not backed up"))
            return nil
        }
    }

    /// The root when sources share a last name: one entry per first component of their absolute
    /// paths, folders down to each source (with the metadata of the folders on this machine, not
    /// their other contents), and each source walked as usual; the parent snapshot (same paths, so
    /// the same layout) is followed down the same way for the unchanged-file shortcut.
    func walkFullPaths(_ absPaths: [String], parentRoot: Tree?) throws(BackupError) -> [ScanEntry] {
        let root = ScanDir(node: TreeNode(name: [0x2f], kind: .directory))
        for p in absPaths {
            let comps = p.split(separator: "/").map { Array($0.utf8) }
            var container = root
            var parentTree = parentRoot
            var prefix = ""
            for (i, c) in comps.enumerated() {
                prefix += "/" + String(decoding: c, as: UTF8.self)
                let pn = parentTree?.nodes.first { $0.name == c }
                if i == comps.count - 1 {
                    switch FileStat.lstat(p) {
                    case .failure(let e):
                        throw BackupError(.invalidArgument, path: p, message: "cannot back up \(p): \(e)")
                    case .success(let st):
                        if let entry = walkEntry(path: p, name: c, st: st, parentNode: pn) { container.children.append(entry) }
                    }
                    break
                }
                let existing = container.children.lazy.compactMap { e -> ScanDir? in
                    if case .directory(let d) = e, d.node.name == c { return d }
                    return nil
                }.first
                if let existing {
                    container = existing
                } else {
                    guard case .success(let st) = FileStat.statFollowing(prefix), st.kind == .directory else {
                        throw BackupError(.invalidArgument, path: p, message: "cannot back up \(p): \(prefix) is not a folder")
                    }
                    directories += 1
                    let d = ScanDir(node: makeNode(c, .directory, st))
                    container.children.append(.directory(d))
                    container = d
                }
                if let sub = pn?.kind == .directory ? pn?.subtree : nil {
                    parentTree = try? runBlocking { try await self.engine.readTree(sub) }
                } else {
                    parentTree = nil
                }
            }
        }
        return root.children
    }

    func walkDirectory(path: String, name: [UInt8], st: FileStat, parentNode: TreeNode?) -> ScanEntry? {
        let names: [String]
        do { names = try FileManager.default.contentsOfDirectory(atPath: path) } catch {
            unreadable(path, "cannot list directory: \(Self.reason(error))")
            return nil
        }
        directories += 1
        let dir = ScanDir(node: makeNode(name, .directory, st))
        var parentTree: Tree?
        if let sub = parentNode?.subtree {
            parentTree = try? runBlocking { try await self.engine.readTree(sub) }
        }
        let present = Set(names)
        for child in names.sorted() {
            let childPath = path + "/" + child
            // -wal, -shm, -journal of a SQLite database are never stored on their own: the capture includes them.
            if let base = Self.sidecarBase(child), present.contains(base), Self.isSQLiteFile(path + "/" + base) { continue }
            let childName = Array(child.utf8)
            guard case .success(let cst) = FileStat.lstat(childPath) else {
                unreadable(childPath, "cannot stat: \(String(cString: strerror(errno)))")
                continue
            }
            let pn = parentTree?.nodes.first { $0.name == childName }
            if let e = walkEntry(path: childPath, name: childName, st: cst, parentNode: pn) { dir.children.append(e) }
        }
        return .directory(dir)
    }

    static func sidecarBase(_ name: String) -> String? {
        for s in ["-wal", "-shm", "-journal"] where name.hasSuffix(s) && name.count > s.count {
            return String(name.dropLast(s.count))
        }
        return nil
    }

    static func isSQLiteFile(_ path: String) -> Bool {
        // Non-blocking and not following: `path` may be a named pipe (an open would wait for a writer).
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_NOFOLLOW)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var buf = [UInt8](repeating: 0, count: 100)
        let n = buf.withUnsafeMutableBytes { (try? Posix.preadFully(fd, $0.baseAddress!, count: 100, offset: 0)) ?? 0 }
        return ChunkingPolicy.isSQLiteHeader(buf[0..<n])
    }

    static func reason(_ error: any Error) -> String {
        if let e = error as? CocoaError, let u = e.userInfo[NSUnderlyingErrorKey] as? NSError,
           u.domain == NSPOSIXErrorDomain {
            return String(cString: strerror(Int32(u.code)))
        }
        return (error as NSError).localizedDescription
    }

    func walkFile(path: String, name: [UInt8], st: FileStat, parentNode p: TreeNode?) -> ScanEntry? {
        var node = makeNode(name, .file, st)
        node.size = UInt64(st.size)
        node.links = st.links
        filesTotal += 1
        bytesTotal += st.size
        if p == nil { filesNew += 1 }
        // Unchanged-file shortcut: same size, mtime, ctime, inode as the parent, mtime not within 2 s of
        // the parent's scan, not a database, and every chunk still indexed.
        if let p, !p.isDatabase, p.size == node.size, p.mtimeSec == node.mtimeSec, p.mtimeNsec == node.mtimeNsec,
           p.ctimeSec == node.ctimeSec, p.ctimeNsec == node.ctimeNsec, p.inode == node.inode,
           node.mtimeSec < parentTime - 2, p.content.allSatisfy({ engine.location(of: $0) != nil }) {
            node.content = p.content
            filesSkipped += 1
            reusedFiles.append((path, node))
            counters.withLock {
                $0.filesDone += 1
                $0.bytesDone += st.size
            }
            return .reused(node)
        }
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_NOFOLLOW)  // replaced by a pipe or a symlink since the walk: never block or follow
        guard fd >= 0 else {
            unreadable(path, String(cString: strerror(errno)))
            filesTotal -= 1
            bytesTotal -= st.size
            if p == nil { filesNew -= 1 }
            return nil
        }
        var head = [UInt8](repeating: 0, count: ChunkingPolicy.headerLength)
        let n = head.withUnsafeMutableBytes { (try? Posix.preadFully(fd, $0.baseAddress!, count: $0.count, offset: 0)) ?? 0 }
        close(fd)
        let isDB = ChunkingPolicy.isSQLiteHeader(head[0..<n])
        node.isDatabase = isDB
        let job = FileJob(path: path, node: node, parentNode: p, isDatabase: isDB)
        jobs.append(job)
        return .file(job)
    }

    // MARK: Workers

    func enqueueInitialWork() {
        // Databases first: their capture and compression are the longest single jobs.
        for j in jobs where j.isDatabase { queue.append(.capture(j)) }
        for j in jobs where !j.isDatabase { planSegments(j, length: Int(j.node.size), head: nil) }
        jobsOutstanding = jobs.count
    }

    /// Splits a file into segments of up to 16 chunks so that one large file uses every worker.
    func planSegments(_ j: FileJob, length: Int, head: [UInt8]?) {
        let plan = engine.policy.plan(forFileStartingWith: head ?? [])
        j.chunkSize = plan.chunkSize
        let ranges = plan.chunkRanges(fileLength: length)
        j.content = Array(repeating: nil, count: ranges.count)
        if ranges.isEmpty {
            j.segmentsLeft = 0
            return
        }
        let per = max(16, (1 << 20) / max(1, j.chunkSize))  // about 1 MiB or 16 chunks per work item
        var items: [WorkItem] = []
        var i = 0
        while i < ranges.count {
            items.append(.segment(j, i..<min(ranges.count, i + per)))
            i += per
        }
        j.segmentsLeft = items.count
        queue.append(contentsOf: items)
    }

    func runWorkers() throws(BackupError) {
        let params = engine.config.parameters
        let keys = engine.keys
        let padding = PaddingPolicy(parameters: params)
        packWriters = PackWriterFactory {
            PackWriter(keys: keys, compressionLevel: params.compressionLevel, expectedSize: params.targetPackSize,
                       padding: padding)
        }
        defer { packWriters.stop() }
        // Non-database files with their plan set at enqueue time: plan needs the head only for SQLite.
        enqueueInitialWork()
        // Empty files are done at once.
        for j in jobs where !j.isDatabase && j.content.isEmpty { finishJob(j) }
        let workerCount = max(1, min(ProcessInfo.processInfo.activeProcessorCount, 8))
        let factory = packWriters!
        packs = PackPool(count: workerCount, target: params.targetPackSize, uploader: uploader) { factory.next() }
        let group = DispatchGroup()
        for _ in 0..<workerCount {
            group.enter()
            let t = Thread { [self] in
                self.workerLoop()
                group.leave()
            }
            t.stackSize = 1 << 20
            t.start()
        }
        // Progress, several times a second, until the workers are done.
        while group.wait(timeout: .now() + .milliseconds(250)) == .timedOut {
            emitProgress()
        }
        emitProgress()
        if let f = uploader.failed { throw f }
    }

    func emitProgress() {
        let c = counters.withLock { $0 }
        continuation.yield(.progress(BackupProgress(
            filesDone: c.filesDone, filesTotal: filesTotal, bytesDone: c.bytesDone, bytesTotal: bytesTotal,
            bytesRead: c.bytesRead, bytesStored: uploader.stored, currentPath: c.currentPath,
            elapsed: ContinuousClock.now - started)))
    }

    func nextItem() -> WorkItem? {
        queueLock.lock()
        defer { queueLock.unlock() }
        while true {
            if isCancelled || uploader.failed != nil { return nil }
            if queueHead < queue.count {
                let item = queue[queueHead]
                queueHead += 1
                activeWorkers += 1
                return item
            }
            // Nothing queued: done unless another worker may still add segments (a capture in progress).
            if activeWorkers == 0 { queueLock.broadcast(); return nil }
            queueLock.wait()
        }
    }

    func itemDone() {
        queueLock.lock()
        activeWorkers -= 1
        queueLock.broadcast()
        queueLock.unlock()
    }

    func workerLoop() {
        let bufferSize = max(engine.policy.fileChunkSize, 1 << 16)
        var buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bufferSize, alignment: 64)
        defer { buffer.deallocate() }
        let deflater = Deflater(level: engine.config.parameters.compressionLevel)
        while let item = nextItem() {
            switch item {
            case .capture(let job):
                capture(job)
            case .segment(let job, let chunks):
                if job.chunkSize > buffer.count {
                    buffer.deallocate()
                    buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: job.chunkSize, alignment: 64)
                }
                processSegment(job, chunks, buffer: buffer, deflater: deflater)
            }
            itemDone()
        }
    }

    func capture(_ job: FileJob) {
        counters.withLock { $0.currentPath = job.path }
        let fd: Int32
        do { fd = try SQLiteCapture.capture(path: job.path, mode: options.databaseCapture, in: options.captureDirectory) } catch {
            failJob(job, "cannot capture the SQLite database: \(error)")
            return
        }
        let length: Int
        switch FileStat.fstat(fd) {
        case .success(let st): length = Int(st.size)
        case .failure(let e):
            close(fd)
            failJob(job, "cannot read the captured copy: \(e)")
            return
        }
        var head = [UInt8](repeating: 0, count: ChunkingPolicy.headerLength)
        let n = head.withUnsafeMutableBytes { (try? Posix.preadFully(fd, $0.baseAddress!, count: $0.count, offset: 0)) ?? 0 }
        job.captureFD = fd
        job.node.size = UInt64(length)
        counters.withLock { $0.databasesCaptured += 1 }
        queueLock.lock()
        planSegments(job, length: length, head: Array(head[0..<n]))
        let empty = job.content.isEmpty
        queueLock.broadcast()
        queueLock.unlock()
        if empty { finishJob(job) }
    }

    func failJob(_ job: FileJob, _ reason: String) {
        job.lock.lock()
        let first = job.failure == nil
        if first { job.failure = reason }
        job.lock.unlock()
        if first { unreadable(job.path, reason) }
    }

    func processSegment(_ job: FileJob, _ chunks: Range<Int>, buffer: UnsafeMutableRawBufferPointer,
                        deflater: Deflater) {
        defer { segmentDone(job) }
        job.lock.lock()
        let skip = job.failure != nil
        job.lock.unlock()
        if skip { return }
        let ownFD = job.captureFD < 0
        let fd = ownFD ? open(job.path, O_RDONLY | O_NONBLOCK | O_NOFOLLOW) : job.captureFD
        guard fd >= 0 else {
            failJob(job, String(cString: strerror(errno)))
            return
        }
        defer { if ownFD { close(fd) } }
        counters.withLock { $0.currentPath = job.path }
        let ranges = ChunkRanges(length: Int(job.node.size), chunkSize: job.chunkSize)
        for i in chunks {
            if isCancelled { return }
            let r = ranges[i]
            let n: Int
            if ownFD, Self.isHole(fd, r) {
                // A hole (SEEK_DATA): zeros, known without reading them.
                buffer.baseAddress!.initializeMemory(as: UInt8.self, repeating: 0, count: r.count)
                n = r.count
            } else {
                do { n = try Posix.preadFully(fd, buffer.baseAddress!, count: r.count, offset: Int64(r.lowerBound)) } catch {
                    failJob(job, "read error: \(error)")
                    return
                }
            }
            guard n == r.count else {
                failJob(job, "the file shrank while it was being read; it will be backed up next time")
                return
            }
            let plain = UnsafeRawBufferPointer(rebasing: buffer[0..<n])
            let id = engine.keys.chunkID(of: plain)
            job.lock.lock()
            job.content[i] = id
            job.lock.unlock()
            var isNew = false
            if claim(id) {
                isNew = true
                do {
                    try packs.add(type: .data, id: id, plaintext: plain, compress: job.isDatabase && engine.compresses,
                                  deflater: deflater)
                } catch is BackupError {
                    return  // an upload failed: recorded by the uploader, the run stops
                } catch {
                    failJob(job, "cannot pack: \(error)")
                    return
                }
            }
            counters.withLock {
                $0.bytesRead += Int64(n)
                $0.bytesDone += job.isDatabase ? 0 : Int64(n)
                if isNew {
                    $0.bytesNew += Int64(n)
                    $0.blobsNew += 1
                }
            }
        }
    }

    /// True when `range` of the file lies wholly in a hole: the file system says the next data is at
    /// or after its end, and the file still reaches its end (a file that shrank is read, and reported).
    static func isHole(_ fd: Int32, _ range: Range<Int>) -> Bool {
        guard let next = Posix.nextData(fd, from: Int64(range.lowerBound)), next >= Int64(range.upperBound) else { return false }
        if next != Int64.max { return true }
        guard case .success(let st) = FileStat.fstat(fd) else { return false }
        return st.size >= Int64(range.upperBound)
    }

    /// True when adding a blob of at most `n` plaintext bytes could make the finished pack (blobs,
    /// then the header with one 48-byte entry per blob, its tag and the 44-byte trailer) outgrow the
    /// `target + 64 KiB` the writer reserved. Counting the header matters for the database's small
    /// blobs (a few thousand per pack, so a header of 100-200 KiB): without it `finish()` overflows
    /// the buffer and Foundation copies the whole pack into a new one about twice as large (on the
    /// chat dataset this copy cost 0.3 s of system time in a 2.5 s initial backup).
    static func packWouldOverflow(_ w: PackWriter, adding n: Int, target: Int) -> Bool {
        let blob = n + PackFormat.tagLength
        let header = 16 + 48 * (w.blobCount + 1) + PackFormat.tagLength + PackFormat.trailerLength
        return w.byteCount + n + 64 > target || w.byteCount + blob + header > target + (64 << 10)
    }

    func segmentDone(_ job: FileJob) {
        job.lock.lock()
        job.segmentsLeft -= 1
        let last = job.segmentsLeft == 0
        job.lock.unlock()
        if last { finishJob(job) }
    }

    func finishJob(_ job: FileJob) {
        if job.captureFD >= 0 {
            close(job.captureFD)
            job.captureFD = -1
        }
        if !job.isDatabase, job.failure == nil {
            if let hook = Self.afterFileRead.withLock({ $0[job.path] }) { hook() }
            // Compared with what the walk saw: a file written meanwhile is stored as read, with a warning.
            if case .success(let now) = FileStat.lstat(job.path),
               UInt64(now.size) != job.node.size || now.mtimeSec != job.node.mtimeSec || now.mtimeNsec != job.node.mtimeNsec {
                let w = UnreadableFile(path: job.path, reason: "the file changed while it was read (size \(job.node.size) -> \(now.size)); it was stored as read and is read again next time")
                counters.withLock { $0.changedWhileRead.append(w) }
            }
        }
        job.lock.lock()
        job.done = true
        if job.failure == nil {
            if job.content.contains(where: { $0 == nil }) {
                job.failure = "incomplete"
            } else {
                job.node.content = job.content.map { $0! }
            }
        }
        job.lock.unlock()
        counters.withLock {
            $0.filesDone += 1
            if job.isDatabase { $0.bytesDone += Int64(job.node.size) }
        }
    }

    // MARK: Trees

    func storeTree(_ tree: Tree, deflater: Deflater) throws(BackupError) -> ChunkID {
        let bytes = tree.encoded()
        let id = engine.keys.chunkID(of: bytes)
        producedTrees.withLock { $0[id] = bytes }
        if claim(id) {
            do {
                try bytes.withUnsafeBytes { raw in
                    try packs.add(type: .tree, id: id, plaintext: raw, compress: engine.compresses, deflater: deflater)
                }
            } catch let e as BackupError {
                throw e
            } catch {
                throw BackupError(.invalidArgument, message: "a directory listing is too large to store: \(error)")
            }
        }
        return id
    }

    func node(for entry: ScanEntry, deflater: Deflater) throws(BackupError) -> TreeNode? {
        switch entry {
        case .reused(let n), .symlink(let n):
            return n
        case .file(let job):
            guard job.failure == nil else { return nil }
            return job.node
        case .directory(let dir):
            var nodes: [TreeNode] = []
            var below: UInt64 = 0
            for c in dir.children {
                guard let n = try node(for: c, deflater: deflater) else { continue }
                nodes.append(n)
                // Counted so that a restore that cannot read this listing still knows what it held.
                below += n.kind == .directory ? (n.entriesBelow ?? 0) : 1
            }
            var n = dir.node
            n.subtree = try storeTree(Tree(nodes: nodes), deflater: deflater)
            n.entriesBelow = below
            return n
        }
    }
}

extension Engine {
    func backupStream(repository: Repository, paths: [String], options: BackupOptions) -> AsyncThrowingStream<BackupEvent, any Error> {
        AsyncThrowingStream(bufferingPolicy: .unbounded) { continuation in
            let run = BackupRun(engine: self, paths: paths, options: options, continuation: continuation)
            continuation.onTermination = { reason in
                if case .cancelled = reason { run.cancelled.store(true, ordering: .relaxed) }
            }
            let t = Thread {
                do {
                    let summary = try run.run()
                    continuation.yield(.finished(summary))
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            t.stackSize = 4 << 20
            t.start()
        }
    }

    /// Packs in storage that no index lists and no prune mark condemns: uploaded by a run that was
    /// interrupted before its checkpoint. Their headers (authenticated) are read so they can be indexed.
    func recoverOrphanPacks() async throws(BackupError) -> [IndexedPack] {
        let known = index.withLock { Set($0.packs.keys).union($0.condemned) }
        var out: [IndexedPack] = []
        for info in try await listObjects("data/") {
            guard let id = Self.objectID(fromName: info.name, prefix: "data/"), !known.contains(id),
                  info.name == id.packName else { continue }
            guard let p = try? await readPackHeader(id, size: info.size) else { continue }
            out.append(p)
        }
        return out
    }

    /// Reads and authenticates a pack's header with one ranged read of its tail.
    func readPackHeader(_ id: ObjectID, size: Int) async throws(BackupError) -> IndexedPack {
        let name = id.packName
        let tailLen = min(size, PackFormat.suggestedTailLength)
        do {
            // Aligned reads: the provider does not learn where the header starts.
            var tail = try await readAlignedTail(name, size: size, count: tailLen).bytes
            let trailer = try PackTrailer(tail: tail)
            if trailer.tailLength > tail.count {
                guard trailer.tailLength <= size else {
                    throw BackupError(.dataDamaged, object: name, message: "\(name) is damaged: header longer than the pack")
                }
                tail = try await readAlignedTail(name, size: size, count: trailer.tailLength).bytes
            }
            let header = try PackHeader(tail: tail, keys: keys, packLength: size)
            return IndexedPack(id: id, salt: header.salt, length: size, entries: header.entries)
        } catch let e as BackupError {
            throw e
        } catch let e as StorageError {
            throw Self.storageError(e, doing: "reading the header of \(name)")
        } catch let e as FormatError {
            throw BackupError(.dataDamaged, object: name, message: "\(name) is damaged: \(e.message)", underlying: e)
        } catch {
            throw BackupError(.dataDamaged, object: name, message: "\(name) is damaged: \(error)")
        }
    }
}

/// Makes the workers' pack writers on one thread of its own, so that every pack buffer (8 MiB each,
/// reserved when the writer is made) comes from that thread's glibc malloc arena. Made on the
/// workers, each worker's arena kept its own free pack-sized blocks (glibc keeps freed memory at
/// the top of an arena, which is what makes reusing it cheap), once per worker. Measured on the
/// chat dataset (2 workers): peak RSS of the initial backup about 162 -> 141 MiB, same time.
/// A worker waits only while one writer is made (an allocation, no copying).
final class PackWriterFactory: @unchecked Sendable {
    private let cond = NSCondition()
    private var requests = 0
    private var ready: [PackWriter] = []
    private var stopped = false
    private let make: () -> PackWriter

    init(make: @escaping () -> PackWriter) {
        self.make = make
        let t = Thread { [self] in self.serve() }
        t.stackSize = 1 << 20
        t.start()
    }

    /// A new, empty writer.
    func next() -> PackWriter {
        cond.lock()
        defer { cond.unlock() }
        if stopped { return make() }
        requests += 1
        cond.broadcast()
        while ready.isEmpty && !stopped { cond.wait() }
        if ready.isEmpty { return make() }
        return ready.removeLast()
    }

    /// Ends the thread (after the workers are done).
    func stop() {
        cond.lock()
        stopped = true
        cond.broadcast()
        cond.unlock()
    }

    private func serve() {
        cond.lock()
        while true {
            while requests == 0 && !stopped { cond.wait() }
            if stopped { break }
            requests -= 1
            cond.unlock()
            let w = make()
            cond.lock()
            ready.append(w)
            cond.broadcast()
        }
        cond.unlock()
    }
}
