import Foundation
import Synchronization
import CofferCore
import CofferStorage

/// One regular file being restored. Its blobs arrive in pack order, not file order, from several
/// tasks at once; each is written at its own offset of a temporary file beside the destination, and
/// the file gets its name only when every blob has been written and verified.
final class FileRestore: @unchecked Sendable {
    let item: RestoreItem
    let dest: String
    let tmp: String
    // Guarded by `lock`.
    let lock = NSLock()
    var created = false
    var remaining = 0
    var failure: RestoreFailure?

    init(item: RestoreItem, dest: String) {
        self.item = item
        self.dest = dest
        let slash = dest.lastIndex(of: "/")!
        let dir = String(dest[..<slash])
        let name = String(dest[dest.index(after: slash)...])
        tmp = dir + "/.\(name).coffer-restore-\(UInt32.random(in: 0...UInt32.max))"
    }

    /// Records the first failure; later blobs for this file are then skipped.
    func fail(_ f: RestoreFailure) {
        lock.lock()
        if failure == nil { failure = f }
        lock.unlock()
    }
}

/// Where one verified blob goes: a file and an offset in it.
struct BlobDestination {
    let file: FileRestore
    let offset: Int
}

/// Everything a restore needs from one pack, and the ranges to read it with.
struct PackRestorePlan {
    struct Blob {
        let entry: PackEntry
        var destinations: [BlobDestination]
    }
    let pack: ObjectID
    let salt: Data
    let packLength: Int?
    var blobs: [Blob] = []
    /// Ranges to read, each covering blobs in `blobs` (indices), sorted by offset.
    var reads: [(range: Range<Int>, blobs: [Int])] = []

    /// Reads are aligned to 1 MiB (start rounded down, end rounded up, clipped to the pack): the
    /// storage provider sees which megabytes of a pack were read, never where a blob starts or ends
    /// (Part B: no observable blob lengths). Needed blobs less than 1 MiB apart share a read; one
    /// read is at most `maxRead` bytes unless a single blob is larger.
    static let alignment = 1 << 20
    static let maxRead = 8 << 20

    mutating func planReads() {
        let order = blobs.indices.sorted { blobs[$0].entry.offset < blobs[$1].entry.offset }
        var groups: [(lo: Int, hi: Int, members: [Int])] = []
        for i in order {
            let r = blobs[i].entry.range
            if let last = groups.last, r.lowerBound - last.hi < Self.alignment,
               max(last.hi, r.upperBound) - last.lo <= Self.maxRead {
                groups[groups.count - 1].hi = max(last.hi, r.upperBound)
                groups[groups.count - 1].members.append(i)
            } else {
                groups.append((r.lowerBound, r.upperBound, [i]))
            }
        }
        let a = Self.alignment
        reads = groups.map { g in
            var lo = g.lo / a * a
            var hi = (g.hi + a - 1) / a * a
            if let packLength {
                hi = min(hi, packLength)
                if hi < g.hi { hi = g.hi }  // an index claiming more than the pack: the read reports it
            }
            lo = min(lo, g.lo)
            return (lo..<hi, g.members)
        }
    }
}

extension Engine {
    /// Restores regular files pack by pack: every pack that holds blobs of the selected files is read
    /// once (in 1 MiB-aligned ranges), each blob verified once and written to every place that needs
    /// it. Packs are processed `concurrency` at a time, so one large file (the database) uses every
    /// core and a remote storage sees a few large reads instead of one per run of blobs.
    func restoreFiles(_ items: [RestoreItem], target: String, overwrite: Bool, fileCount: Int, totalBytes: Int64,
                      started: ContinuousClock.Instant,
                      events: AsyncThrowingStream<RestoreEvent, any Error>.Continuation) async -> RestoreState {
        let state = RestoreState()
        var files: [FileRestore] = []
        var plans: [PackRestorePlan] = []
        var planOfPack: [ObjectID: Int] = [:]
        var blobOfPack: [[ChunkID: Int]] = []

        func report(_ f: RestoreFailure) {
            state.progress.withLock {
                $0.failures.append(f)
                $0.files += 1
            }
            events.yield(.fileFailed(f))
        }

        // Plan: locate every chunk of every file before anything is written.
        for item in items {
            switch item.node.kind {
            case .symlink:
                if let f = Self.restoreSymlink(item, to: target + "/" + item.path, overwrite: overwrite) {
                    state.progress.withLock { $0.failures.append(f) }
                    events.yield(.fileFailed(f))
                } else {
                    state.progress.withLock { $0.symlinks += 1 }
                }
                continue
            case .directory:
                continue
            case .file:
                break
            }
            let file = FileRestore(item: item, dest: target + "/" + item.path)
            var located: [(BlobLocation, Int)] = []
            located.reserveCapacity(item.node.content.count)
            var offset = 0
            var missing: ChunkID?
            for id in item.node.content {
                guard let loc = location(of: id), salt(of: loc.pack) != nil else { missing = id; break }
                located.append((loc, offset))
                offset += loc.entry.uncompressedLength
            }
            if let missing {
                report(RestoreFailure(path: item.path, object: "blob \(missing.hex)", code: .dataMissing,
                                      message: "\(item.path) was not restored: blob \(missing.hex) is not in the index: its data is missing"))
                continue
            }
            guard offset == Int(item.node.size) else {
                report(RestoreFailure(path: item.path, object: nil, code: .dataDamaged,
                                      message: "\(item.path) was not restored: its chunks hold \(offset) bytes but the listing says \(item.node.size)"))
                continue
            }
            file.remaining = located.count
            files.append(file)
            for (loc, off) in located {
                let p: Int
                if let known = planOfPack[loc.pack] {
                    p = known
                } else {
                    p = plans.count
                    planOfPack[loc.pack] = p
                    plans.append(PackRestorePlan(pack: loc.pack, salt: salt(of: loc.pack)!, packLength: packLength(of: loc.pack)))
                    blobOfPack.append([:])
                }
                let dest = BlobDestination(file: file, offset: off)
                if let b = blobOfPack[p][loc.entry.id] {
                    plans[p].blobs[b].destinations.append(dest)
                } else {
                    blobOfPack[p][loc.entry.id] = plans[p].blobs.count
                    plans[p].blobs.append(.init(entry: loc.entry, destinations: [dest]))
                }
            }
        }
        blobOfPack = []
        for i in plans.indices { plans[i].planReads() }

        // Empty files have nothing to wait for.
        for file in files where file.remaining == 0 {
            finishFile(file, overwrite: overwrite, state: state, events: events)
        }

        let concurrency = max(4, 2 * ProcessInfo.processInfo.activeProcessorCount)
        await withTaskGroup(of: Void.self) { group in
            var running = 0
            for plan in plans {
                if Task.isCancelled { break }
                if running >= concurrency {
                    await group.next()
                    running -= 1
                }
                running += 1
                group.addTask {
                    await self.restorePack(plan, overwrite: overwrite, state: state, events: events)
                    let emit = state.lastEmit.withLock { last -> Bool in
                        if ContinuousClock.now - last > .milliseconds(200) { last = .now; return true }
                        return false
                    }
                    if emit {
                        let p = state.progress.withLock { $0 }
                        events.yield(.progress(RestoreProgress(filesDone: p.files, filesTotal: fileCount, bytesDone: p.written,
                                                               bytesTotal: totalBytes, currentPath: p.lastPath,
                                                               elapsed: ContinuousClock.now - started)))
                    }
                }
            }
        }
        // Whatever did not complete (a failed blob, a cancelled restore) leaves no file behind.
        for file in files {
            let (unfinished, created, failure) = file.lock.withLock {
                (file.remaining > 0 || file.failure != nil, file.created, file.failure)
            }
            guard unfinished else { continue }
            if created { unlink(file.tmp) }
            if let failure, !Task.isCancelled { report(failure) }
        }
        return state
    }

    /// Reads the planned ranges of one pack, verifies each blob, writes it to every destination.
    private func restorePack(_ plan: PackRestorePlan, overwrite: Bool, state: RestoreState,
                             events: AsyncThrowingStream<RestoreEvent, any Error>.Continuation) async {
        let name = plan.pack.packName
        let opener = BlobOpener(keys: keys)
        var fds: [ObjectIdentifier: Int32] = [:]
        defer { for fd in fds.values { close(fd) } }
        for read in plan.reads {
            if Task.isCancelled { return }
            let bytes: Data
            do {
                bytes = try await storage.get(name, range: read.range)
            } catch {
                let e: BackupError = error.code == .rangeNotSatisfiable
                    ? BackupError(.dataDamaged, object: name, message: "\(name) is damaged: shorter than its index says", underlying: error)
                    : Self.storageError(error, doing: "reading \(name)")
                for b in read.blobs { failDestinations(plan.blobs[b], e) }
                continue
            }
            for b in read.blobs {
                let blob = plan.blobs[b]
                let plain: Data
                do {
                    plain = try bytes.withUnsafeBytes { (all) throws(FormatError) -> Data in
                        let lo = blob.entry.offset - read.range.lowerBound
                        guard lo >= 0, lo + blob.entry.length <= all.count else {
                            throw FormatError(.truncated, "stored blob lies outside the bytes read", object: "blob \(blob.entry.id.hex)")
                        }
                        return try opener.open(UnsafeRawBufferPointer(rebasing: all[lo..<(lo + blob.entry.length)]),
                                               entry: blob.entry, salt: plan.salt)
                    }
                } catch {
                    let why = (error as? FormatError)?.message ?? "\(error)"
                    failDestinations(blob, BackupError(.dataDamaged, object: name,
                                                       message: "blob \(blob.entry.id.hex) in \(name) is damaged: \(why)", underlying: error))
                    continue
                }
                for d in blob.destinations {
                    writeBlob(plain, to: d, fds: &fds, overwrite: overwrite, state: state, events: events)
                }
            }
        }
    }

    private func failDestinations(_ blob: PackRestorePlan.Blob, _ e: BackupError) {
        for d in blob.destinations {
            d.file.fail(RestoreFailure(path: d.file.item.path, object: e.object ?? "blob \(blob.entry.id.hex)", code: e.code,
                                       message: "\(d.file.item.path) was not restored: \(e.message)"))
        }
    }

    private func writeBlob(_ plain: Data, to d: BlobDestination, fds: inout [ObjectIdentifier: Int32], overwrite: Bool,
                           state: RestoreState, events: AsyncThrowingStream<RestoreEvent, any Error>.Continuation) {
        let file = d.file
        let key = ObjectIdentifier(file)
        var fd = fds[key] ?? -1
        if fd < 0 {
            file.lock.lock()
            if file.failure != nil { file.lock.unlock(); return }
            fd = Posix.open(file.tmp, file.created ? O_WRONLY : (O_WRONLY | O_CREAT | O_EXCL), 0o600)
            if fd >= 0 { file.created = true }
            file.lock.unlock()
            guard fd >= 0 else {
                file.fail(RestoreFailure(path: file.item.path, object: nil, code: .fileSystem,
                                         message: "cannot create \(file.tmp): \(String(cString: strerror(errno)))"))
                return
            }
            fds[key] = fd
        }
        let err: Int32? = plain.withUnsafeBytes { b -> Int32? in
            var done = 0
            while done < b.count {
                let n = pwrite(fd, b.baseAddress! + done, b.count - done, off_t(d.offset + done))
                if n < 0 {
                    if errno == EINTR { continue }
                    return errno
                }
                done += n
            }
            return nil
        }
        if let err {
            file.fail(RestoreFailure(path: file.item.path, object: nil, code: .fileSystem,
                                     message: "cannot write \(file.tmp): \(String(cString: strerror(err)))"))
            return
        }
        state.progress.withLock { $0.written += Int64(plain.count) }
        file.lock.lock()
        file.remaining -= 1
        let last = file.remaining == 0 && file.failure == nil
        file.lock.unlock()
        if last {
            if let fd = fds.removeValue(forKey: key) { close(fd) }
            finishFile(file, overwrite: overwrite, state: state, events: events)
        }
    }

    /// Every blob is in place: permissions, times, then the name.
    private func finishFile(_ file: FileRestore, overwrite: Bool, state: RestoreState,
                            events: AsyncThrowingStream<RestoreEvent, any Error>.Continuation) {
        let node = file.item.node
        file.lock.lock()
        let needsCreate = !file.created
        file.created = true
        file.lock.unlock()
        let fd = Posix.open(file.tmp, needsCreate ? (O_WRONLY | O_CREAT | O_EXCL) : O_WRONLY, 0o600)
        guard fd >= 0 else {
            file.fail(RestoreFailure(path: file.item.path, object: nil, code: .fileSystem,
                                     message: "cannot open \(file.tmp): \(String(cString: strerror(errno)))"))
            return
        }
        fchmod(fd, mode_t(node.mode))
        _ = Posix.setTimes(fd: fd, sec: node.mtimeSec, nsec: node.mtimeNsec)
        close(fd)
        if !overwrite, FileManager.default.fileExists(atPath: file.dest) {
            file.fail(RestoreFailure(path: file.item.path, object: nil, code: .targetNotEmpty, message: "\(file.dest) already exists"))
            return
        }
        guard rename(file.tmp, file.dest) == 0 else {
            file.fail(RestoreFailure(path: file.item.path, object: nil, code: .fileSystem,
                                     message: "cannot move \(file.dest) into place: \(String(cString: strerror(errno)))"))
            return
        }
        file.lock.lock()
        file.created = false  // the temporary name no longer exists
        file.lock.unlock()
        state.progress.withLock {
            $0.files += 1
            $0.restored += 1
            $0.bytes += Int64(node.size)
            $0.lastPath = file.item.path
        }
    }
}
