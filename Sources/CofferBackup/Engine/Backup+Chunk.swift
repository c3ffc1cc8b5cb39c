import Foundation
import Synchronization
import CofferCore
import CofferStorage
import CofferPosix

/// The backup's second stage: the workers capture databases, read and chunk files, and hand chunks
/// to the pack writers (packing, then upload, are in PackSink.swift and Uploader.swift).
extension BackupRun {
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
}
