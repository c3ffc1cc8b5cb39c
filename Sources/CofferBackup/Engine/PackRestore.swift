import Foundation
import Synchronization
import CofferCore
import CofferStorage
import CofferPosix

/// One regular file being restored. Its blobs arrive in pack order, not file order, from several
/// tasks at once; each is written at its own offset of a temporary file beside the destination, and
/// the file gets its name only when every blob has been written and verified.
final class FileRestore: Sendable {
    let item: RestoreItem
    /// The directory below the target (`""` = the target) and the name in it.
    let dir: String
    let name: String
    let tmpName: String
    /// For messages: where the file goes.
    let dest: String
    /// What the pack tasks writing this file share.
    struct Status {
        /// The temporary file exists.
        var created = false
        /// Blobs still to write.
        var remaining = 0
        /// The first failure; later blobs are then skipped.
        var failure: RestoreFailure?
        /// The file has its final name.
        var restored = false
    }
    let status = Mutex(Status())

    var failure: RestoreFailure? { status.withLock { $0.failure } }

    init(item: RestoreItem, target: String) {
        self.item = item
        (dir, name) = Engine.split(item.path)
        dest = target + "/" + item.path
        tmpName = ".\(name).coffer-restore-\(UInt32.random(in: 0...UInt32.max))"
    }

    var tmpDisplay: String { (dest as NSString).deletingLastPathComponent + "/" + tmpName }

    /// Records the first failure; later blobs for this file are then skipped.
    func fail(_ f: RestoreFailure) {
        status.withLock { if $0.failure == nil { $0.failure = f } }
    }

    /// Opens the temporary file (creating it, sized to the file so that zero runs never written stay
    /// holes, when `create`), through its directory's handle and without following a symlink.
    func openTemporary(_ handles: TargetDirectories, create: Bool) -> Result<Int32, Errno> {
        let r = handles.withDirectory(dir, create: true) { dfd -> Result<Int32, Errno> in
            let fd = Posix.openNoFollow(at: dfd, tmpName, create ? (O_WRONLY | O_CREAT | O_EXCL) : O_WRONLY, 0o600)
            guard fd >= 0 else { return .failure(Errno(errno)) }
            if create, ftruncate(fd, off_t(clamping: item.node.size)) != 0 {
                let e = errno
                close(fd)
                _ = unlinkat(dfd, tmpName, 0)
                return .failure(Errno(e))
            }
            return .success(fd)
        }
        switch r {
        case .success(let inner): return inner
        case .failure(let e): return .failure(e)
        }
    }

    func removeTemporary(_ handles: TargetDirectories) {
        _ = handles.withDirectory(dir, create: false) { unlinkat($0, tmpName, 0) }
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
    func restoreFiles(_ items: [RestoreItem], target: String, handles: TargetDirectories, overwrite: Bool, fileCount: Int, totalBytes: Int64,
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
        // Hard links: a file whose device and inode (with more than one link) were seen before, with
        // the same content, is linked to the first one once that is restored.
        struct LinkKey: Hashable { let device: UInt64, inode: UInt64 }
        var firstOfInode: [LinkKey: FileRestore] = [:]
        var hardLinks: [(RestoreItem, FileRestore)] = []
        for item in items {
            switch item.node.kind {
            case .symlink:
                if let f = Self.restoreSymlink(item, handles: handles, overwrite: overwrite) {
                    report(f)
                } else {
                    state.progress.withLock { $0.symlinks += 1 }
                }
                continue
            case .fifo:
                if let f = Self.restoreFIFO(item, handles: handles, overwrite: overwrite) {
                    report(f)
                } else {
                    state.progress.withLock { $0.fifos += 1 }
                }
                continue
            case .directory:
                continue
            case .file:
                break
            }
            let key = LinkKey(device: item.node.device, inode: item.node.inode)
            let linkable = item.node.links > 1 && item.node.inode != 0 && !item.node.isDatabase
            if linkable, let first = firstOfInode[key], first.item.node.content == item.node.content,
               first.item.node.size == item.node.size {
                hardLinks.append((item, first))
                continue
            }
            let file = FileRestore(item: item, target: target)
            if linkable, firstOfInode[key] == nil { firstOfInode[key] = file }
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
            file.status.withLock { $0.remaining = located.count }
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
        for file in files where file.status.withLock({ $0.remaining == 0 }) {
            finishFile(file, handles: handles, overwrite: overwrite, state: state, events: events)
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
                    await self.restorePack(plan, handles: handles, overwrite: overwrite, state: state, events: events)
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
            let (unfinished, created, failure) = file.status.withLock {
                ($0.remaining > 0 || $0.failure != nil, $0.created, $0.failure)
            }
            guard unfinished else { continue }
            if created { file.removeTemporary(handles) }
            if let failure, !Task.isCancelled { report(failure) }
        }
        if Task.isCancelled { return state }
        for (item, first) in hardLinks {
            if let f = Self.restoreHardLink(item, to: first, handles: handles, overwrite: overwrite) {
                report(f)
            } else {
                state.progress.withLock {
                    $0.files += 1
                    $0.restored += 1
                    $0.links += 1
                    $0.bytes += Int64(clamping: item.node.size)
                }
            }
        }
        return state
    }

    /// Links `item` to the already restored `first` (same device and inode in the snapshot): through
    /// both directories' handles, never following a symlink. With overwrite, the link is made under
    /// a temporary name and renamed over whatever had the name.
    static func restoreHardLink(_ item: RestoreItem, to first: FileRestore, handles: TargetDirectories,
                                overwrite: Bool) -> RestoreFailure? {
        let done = first.status.withLock { $0.restored }
        guard done else {
            return RestoreFailure(path: item.path, object: nil, code: first.failure?.code ?? .fileSystem,
                                  message: "\(item.path) was not restored: it is a hard link to \(first.item.path), which was not restored")
        }
        let (dir, name) = split(item.path)
        let r = handles.withDirectory(first.dir, create: false) { from -> Result<Void, Errno> in
            let inner = handles.withDirectory(dir, create: true) { to -> Result<Void, Errno> in
                if overwrite {
                    let tmp = ".\(name).coffer-restore-\(UInt32.random(in: 0...UInt32.max))"
                    guard linkat(from, first.name, to, tmp, 0) == 0 else { return .failure(Errno(errno)) }
                    guard renameat(to, tmp, to, name) == 0 else {
                        let e = errno
                        _ = unlinkat(to, tmp, 0)
                        return .failure(Errno(e))
                    }
                    return .success(())
                }
                return linkat(from, first.name, to, name, 0) == 0 ? .success(()) : .failure(Errno(errno))
            }
            switch inner {
            case .success(let r): return r
            case .failure(let e): return .failure(e)
            }
        }
        let why: Errno
        switch r {
        case .success(.success): return nil
        case .success(.failure(let e)), .failure(let e): why = e
        }
        return RestoreFailure(path: item.path, object: nil, code: why.code == EEXIST ? .targetNotEmpty : .fileSystem,
                              message: "cannot link \(item.path) to \(first.item.path): \(why)")
    }

    /// Reads the planned ranges of one pack, verifies each blob, writes it to every destination.
    private func restorePack(_ plan: PackRestorePlan, handles: TargetDirectories, overwrite: Bool, state: RestoreState,
                             events: AsyncThrowingStream<RestoreEvent, any Error>.Continuation) async {
        let name = plan.pack.packName
        let opener = BlobOpener(keys: keys)
        var fds: [ObjectIdentifier: Int32] = [:]
        defer { for fd in fds.values { close(fd) } }
        for read in plan.reads {
            if Task.isCancelled { return }
            let bytes: Data
            do {
                bytes = try await objects.rawGet(name, range: read.range)
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
                    writeBlob(plain, to: d, handles: handles, fds: &fds, overwrite: overwrite, state: state, events: events)
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

    /// Blob writes made on a thread other than the I/O executor's (debug builds count them; tests:
    /// must stay 0 for restores).
    static let writesOffIOExecutor = Atomic<Int>(0)

    /// Writes the parts of `plain` (destined for file offset `offset`) that are not whole zero
    /// blocks of 4 KiB (aligned to the file): the file was sized when it was created, so the blocks
    /// skipped read as zeros and stay holes (sparse files come back sparse). Returns an errno.
    static func writeSkippingZeros(_ fd: Int32, _ plain: UnsafeRawBufferPointer, at offset: Int) -> Int32? {
        #if DEBUG
        // Test instrumentation only: a thread-dictionary lookup per blob is not for release builds.
        if !IOExecutor.isCurrentThread { writesOffIOExecutor.add(1, ordering: .relaxed) }
        #endif
        let block = 4096
        func put(_ r: Range<Int>) -> Int32? {
            var done = r.lowerBound
            while done < r.upperBound {
                let n = pwrite(fd, plain.baseAddress! + done, r.upperBound - done, off_t(offset + done))
                if n < 0 {
                    if errno == EINTR { continue }
                    return errno
                }
                done += n
            }
            return nil
        }
        var run: Int?
        var i = 0
        while i < plain.count {
            let next = min(plain.count, ((offset + i) / block + 1) * block - offset)
            let zero = Self.zeroBlock.withUnsafeBytes { memcmp(plain.baseAddress! + i, $0.baseAddress!, next - i) == 0 }
            if zero {
                if let start = run {
                    if let e = put(start..<i) { return e }
                    run = nil
                }
            } else if run == nil {
                run = i
            }
            i = next
        }
        if let start = run { return put(start..<plain.count) }
        return nil
    }

    private static let zeroBlock = [UInt8](repeating: 0, count: 4096)

    private func writeBlob(_ plain: Data, to d: BlobDestination, handles: TargetDirectories, fds: inout [ObjectIdentifier: Int32],
                           overwrite: Bool, state: RestoreState, events: AsyncThrowingStream<RestoreEvent, any Error>.Continuation) {
        let file = d.file
        let key = ObjectIdentifier(file)
        var fd = fds[key] ?? -1
        if fd < 0 {
            let attempt: Result<Int32, Errno>? = file.status.withLock { st in
                if st.failure != nil { return nil }
                let opened = file.openTemporary(handles, create: !st.created)
                if case .success = opened { st.created = true }
                return opened
            }
            guard let opened = attempt else { return }
            switch opened {
            case .success(let f): fd = f
            case .failure(let e):
                file.fail(RestoreFailure(path: file.item.path, object: nil, code: .fileSystem,
                                         message: "cannot create \(file.tmpDisplay): \(e)"))
                return
            }
            fds[key] = fd
        }
        let err: Int32? = plain.withUnsafeBytes { Self.writeSkippingZeros(fd, $0, at: d.offset) }
        if let err {
            file.fail(RestoreFailure(path: file.item.path, object: nil, code: .fileSystem,
                                     message: "cannot write \(file.tmpDisplay): \(String(cString: strerror(err)))"))
            return
        }
        state.progress.withLock { $0.written += Int64(plain.count) }
        let last = file.status.withLock { st in
            st.remaining -= 1
            return st.remaining == 0 && st.failure == nil
        }
        if last {
            if let fd = fds.removeValue(forKey: key) { close(fd) }
            finishFile(file, handles: handles, overwrite: overwrite, state: state, events: events)
        }
    }

    /// Every blob is in place: owner (as root), permissions, times, then the name, all through the
    /// directory's handle (the final rename replaces a symlink at the name; it never follows one).
    func finishFile(_ file: FileRestore, handles: TargetDirectories, overwrite: Bool, state: RestoreState,
                    events: AsyncThrowingStream<RestoreEvent, any Error>.Continuation) {
        let node = file.item.node
        let opened = file.status.withLock { st in
            let opened = file.openTemporary(handles, create: !st.created)
            if case .success = opened { st.created = true }
            return opened
        }
        let fd: Int32
        switch opened {
        case .success(let f): fd = f
        case .failure(let e):
            file.fail(RestoreFailure(path: file.item.path, object: nil, code: .fileSystem,
                                     message: "cannot open \(file.tmpDisplay): \(e)"))
            return
        }
        if Posix.restoresOwners { _ = fchown(fd, uid_t(node.uid), gid_t(node.gid)) }
        fchmod(fd, mode_t(node.mode))
        _ = Posix.setTimes(fd: fd, sec: node.mtimeSec, nsec: node.mtimeNsec)
        close(fd)
        let moved = handles.withDirectory(file.dir, create: false) { dfd -> RestoreFailure? in
            if !overwrite, case .success = FileStat.lstat(at: dfd, file.name) {
                return RestoreFailure(path: file.item.path, object: nil, code: .targetNotEmpty, message: "\(file.dest) already exists")
            }
            guard renameat(dfd, file.tmpName, dfd, file.name) == 0 else {
                return RestoreFailure(path: file.item.path, object: nil, code: .fileSystem,
                                      message: "cannot move \(file.dest) into place: \(String(cString: strerror(errno)))")
            }
            return nil
        }
        switch moved {
        case .success(let f?):
            file.fail(f)
            return
        case .failure(let e):
            file.fail(RestoreFailure(path: file.item.path, object: nil, code: .fileSystem,
                                     message: "cannot move \(file.dest) into place: \(e)"))
            return
        case .success(nil):
            break
        }
        file.status.withLock {
            $0.created = false  // the temporary name no longer exists
            $0.restored = true
        }
        state.progress.withLock {
            $0.files += 1
            $0.restored += 1
            $0.bytes += Int64(clamping: node.size)
            $0.lastPath = file.item.path
        }
    }
}
