import Foundation
import Synchronization
import CofferCore
import CofferStorage
import CofferPosix

/// The backup's second stage: the workers capture databases, read and chunk files, and hand chunks
/// to the open packs (PackPool.swift), which hand full packs to the upload tasks (Uploader.swift).
/// Workers and upload tasks are one task group; the workers run on the I/O executor (their reads
/// block), and wait for work or for an upload suspended, never holding a thread.
extension BackupRun {
    // MARK: Stage: pack and upload

    /// Reads and packs every job, then stores the trees of `top` and flushes the last packs, with
    /// the upload tasks running throughout; then indexes what was uploaded. Returns the root tree.
    func packAndUpload(_ top: [ScanEntry]) async throws(BackupError) -> ChunkID {
        let pipe = self.pipe
        enqueueInitialWork()
        let outcome: Result<ChunkID, BackupError> = await withTaskGroup(of: Void.self) { uploads in
            for _ in 0..<pipe.uploader.limit {
                uploads.addTask { await pipe.uploader.uploadLoop() }
            }
            let result: Result<ChunkID, BackupError>
            do throws(BackupError) {
                try await pipe.runWorkers()
                if pipe.isCancelled {
                    try? await pipe.packs.flush()
                    result = .failure(BackupRun.cancelled)
                } else {
                    FreedMemory.release()  // the workers' buffers, before the trees and the snapshot need new ones
                    let rootID = try await storeTrees(top)
                    try await pipe.packs.flush()
                    result = .success(rootID)
                }
            } catch {
                result = .failure(error)
            }
            pipe.uploader.close()
            await uploads.waitForAll()
            return result
        }
        switch outcome {
        case .success(let rootID):
            try await pipe.uploader.drain()
            return rootID
        case .failure(let e) where e.code == .cancelled:
            try? await pipe.uploader.drain()
            throw e
        case .failure(let e):
            throw pipe.uploader.failed ?? e
        }
    }

    func enqueueInitialWork() {
        var items: [WorkItem] = []
        // Databases first: their capture and compression are the longest single jobs.
        for j in jobs where j.isDatabase { items.append(.capture(j)) }
        for j in jobs where !j.isDatabase { items += pipe.planSegments(j, length: Int(j.node.size), head: nil) }
        pipe.queue.add(items)
        // Empty files are done at once.
        for j in jobs where !j.isDatabase && j.state.withLock({ $0.content.isEmpty }) { pipe.finishJob(j) }
    }
}

extension Engine {
    /// File segments a backup read on a thread other than the I/O executor's (debug builds count
    /// them; tests: must stay 0).
    static let readsOffIOExecutor = Atomic<Int>(0)
}

extension BackupPipeline {
    // MARK: Workers

    /// Splits a file into segments of up to 16 chunks so that one large file uses every worker.
    func planSegments(_ j: FileJob, length: Int, head: [UInt8]?) -> [WorkItem] {
        let plan = engine.policy.plan(forFileStartingWith: head ?? [])
        let ranges = plan.chunkRanges(fileLength: length)
        let per = max(16, (1 << 20) / max(1, plan.chunkSize))  // about 1 MiB or 16 chunks per work item
        var items: [WorkItem] = []
        var i = 0
        while i < ranges.count {
            items.append(.segment(j, i..<min(ranges.count, i + per)))
            i += per
        }
        j.state.withLock {
            $0.chunkSize = plan.chunkSize
            $0.content = Array(repeating: nil, count: ranges.count)
            $0.segmentsLeft = items.count
        }
        return items
    }

    /// The workers, in a task group on the I/O executor, with a progress report several times a
    /// second until they are done.
    func runWorkers() async throws(BackupError) {
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(250))
                    if Task.isCancelled { break }
                    self.emitProgress()
                }
            }
            await withTaskGroup(of: Void.self) { workers in
                for _ in 0..<workerCount {
                    workers.addTask(executorPreference: IOExecutor.shared) { await self.workerLoop() }
                }
            }
            group.cancelAll()
        }
        emitProgress()
        if let f = uploader.failed { throw f }
    }

    func emitProgress() {
        let c = counters.withLock { $0 }
        let t = totals.withLock { $0 }
        events(.progress(BackupProgress(
            filesDone: c.filesDone, filesTotal: t.files, bytesDone: c.bytesDone, bytesTotal: t.bytes,
            bytesRead: c.bytesRead, bytesStored: uploader.stored, currentPath: c.currentPath,
            elapsed: ContinuousClock.now - started)))
    }

    func workerLoop() async {
        let bufferSize = max(engine.policy.fileChunkSize, 1 << 16)
        var buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bufferSize, alignment: 64)
        var scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: bufferSize, alignment: 64)
        defer {
            buffer.deallocate()
            scratch.deallocate()
        }
        let deflater = Deflater(level: engine.config.parameters.compressionLevel)
        while let item = await queue.next() {
            if isCancelled || uploader.failed != nil {
                queue.close()
                queue.done()
                break
            }
            switch item {
            case .capture(let job):
                capture(job)
            case .segment(let job, let chunks):
                let chunkSize = job.state.withLock { $0.chunkSize }
                if chunkSize > buffer.count {
                    buffer.deallocate()
                    scratch.deallocate()
                    buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 64)
                    scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 64)
                }
                await processSegment(job, chunks, buffer: buffer, scratch: scratch, deflater: deflater)
            }
            queue.done()
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
        job.state.withLock {
            $0.captureFD = fd
            $0.node.size = UInt64(length)
        }
        counters.withLock { $0.databasesCaptured += 1 }
        let items = planSegments(job, length: length, head: Array(head[0..<n]))
        if items.isEmpty { finishJob(job) } else { queue.add(items) }
    }

    func failJob(_ job: FileJob, _ reason: String) {
        let first = job.state.withLock { s in
            guard s.failure == nil else { return false }
            s.failure = reason
            return true
        }
        if first { unreadable(job.path, reason) }
    }

    func processSegment(_ job: FileJob, _ chunks: Range<Int>, buffer: UnsafeMutableRawBufferPointer,
                        scratch: UnsafeMutableRawBufferPointer, deflater: Deflater) async {
        defer { segmentDone(job) }
        #if DEBUG
        // Test instrumentation only (a thread-dictionary lookup per segment).
        if !IOExecutor.isCurrentThread { Engine.readsOffIOExecutor.add(1, ordering: .relaxed) }
        #endif
        let (skip, captureFD, size, chunkSize) = job.state.withLock { ($0.failure != nil, $0.captureFD, $0.node.size, $0.chunkSize) }
        if skip { return }
        let ownFD = captureFD < 0
        let fd = ownFD ? open(job.path, O_RDONLY | O_NONBLOCK | O_NOFOLLOW) : captureFD
        guard fd >= 0 else {
            failJob(job, String(cString: strerror(errno)))
            return
        }
        defer { if ownFD { close(fd) } }
        counters.withLock { $0.currentPath = job.path }
        let ranges = ChunkRanges(length: Int(size), chunkSize: chunkSize)
        for i in chunks {
            if isCancelled { return }
            let r = ranges[i]
            let n: Int
            if ownFD, BackupRun.isHole(fd, r) {
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
            job.state.withLock { $0.content[i] = id }
            var isNew = false
            if claim(id) {
                isNew = true
                do {
                    try await packs.add(type: .data, id: id, plaintext: plain, compress: job.isDatabase && engine.compresses,
                                        deflater: deflater, scratch: scratch)
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
}

extension BackupRun {
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
    ///
    /// The first condition closes a pack before a blob would take it past `target`, so a 2 MiB pack
    /// holds one 1 MiB media chunk. Letting packs fill to the target instead (two chunks) made the
    /// chat dataset's first backup 9 % faster (462-469 packs instead of 683-690) but raised peak RSS
    /// by 2.3 MiB on average (media packs in flight fill their buffers), so it was reverted
    /// (session 11, BENCHMARKS.md).
    static func packWouldOverflow(_ w: PackWriter, adding n: Int, target: Int) -> Bool {
        let blob = n + PackFormat.tagLength
        let header = 16 + 48 * (w.blobCount + 1) + PackFormat.tagLength + PackFormat.trailerLength
        return w.byteCount + n + 64 > target || w.byteCount + blob + header > target + (64 << 10)
    }
}

extension BackupPipeline {
    func segmentDone(_ job: FileJob) {
        let last = job.state.withLock { s in
            s.segmentsLeft -= 1
            return s.segmentsLeft == 0
        }
        if last { finishJob(job) }
    }

    func finishJob(_ job: FileJob) {
        let (fd, size, mtimeSec, mtimeNsec, failed) = job.state.withLock { s in
            let fd = s.captureFD
            s.captureFD = -1
            return (fd, s.node.size, s.node.mtimeSec, s.node.mtimeNsec, s.failure != nil)
        }
        if fd >= 0 { close(fd) }
        if !job.isDatabase, !failed {
            if let hook = Self.afterFileRead.withLock({ $0[job.path] }) { hook() }
            // Compared with what the walk saw: a file written meanwhile is stored as read, with a warning.
            if case .success(let now) = FileStat.lstat(job.path),
               UInt64(now.size) != size || now.mtimeSec != mtimeSec || now.mtimeNsec != mtimeNsec {
                let w = UnreadableFile(path: job.path, reason: "the file changed while it was read (size \(size) -> \(now.size)); it was stored as read and is read again next time")
                counters.withLock { $0.changedWhileRead.append(w) }
            }
        }
        job.state.withLock { s in
            s.done = true
            if s.failure == nil {
                if s.content.contains(where: { $0 == nil }) {
                    s.failure = "incomplete"
                } else {
                    s.node.content = s.content.map { $0! }
                }
            }
        }
        counters.withLock {
            $0.filesDone += 1
            if job.isDatabase { $0.bytesDone += Int64(size) }
        }
    }
}
