import Foundation
import Synchronization
import CofferCore
import CofferStorage
import CofferPosix

/// One thing to restore, found by walking the snapshot's trees.
struct RestoreItem: Sendable {
    var path: String  // relative, `/`-separated
    var node: TreeNode
}

extension Engine {
    static func components(_ path: String?) -> [String] {
        (path ?? "").split(separator: "/").map(String.init).filter { $0 != "." && !$0.isEmpty }
    }

    /// The node at `components` below the root tree (`nil` components = the root itself).
    func lookup(root: ChunkID, components: [String]) async throws(BackupError) -> (TreeNode?, Tree?) {
        var tree = try await readTree(root)
        var node: TreeNode? = nil
        for (i, c) in components.enumerated() {
            guard let n = tree.nodes.first(where: { $0.name == Array(c.utf8) }) else {
                throw BackupError(.pathNotFound, path: components.joined(separator: "/"),
                                  message: "\(components.joined(separator: "/")) is not in the snapshot")
            }
            node = n
            if i < components.count - 1 || n.kind == .directory {
                guard n.kind == .directory, let sub = n.subtree else {
                    if i == components.count - 1 { break }
                    throw BackupError(.pathNotFound, path: components.joined(separator: "/"),
                                      message: "\(components.prefix(i + 1).joined(separator: "/")) is not a directory")
                }
                tree = try await readTree(sub)
            }
        }
        return (node, node == nil || node?.kind == .directory ? tree : nil)
    }

    static func nodeInfo(_ path: String, _ n: TreeNode) -> NodeInfo {
        let kind: NodeInfo.Kind = switch n.kind {
        case .file: .file
        case .directory: .directory
        case .symlink: .symlink
        case .fifo: .fifo
        }
        // Tree.decode bounds sizes (Tree.maxFileSize), so this cannot trap.
        return NodeInfo(path: path, kind: kind, size: Int64(clamping: n.size), mode: n.mode, modified: n.modified,
                        linkTarget: n.kind == .symlink ? String(decoding: n.linkTarget, as: UTF8.self) : nil,
                        isDatabase: n.isDatabase)
    }

    func list(snapshot: String, path: String?, recursive: Bool) async throws(BackupError) -> [NodeInfo] {
        let (_, snap) = try resolve(snapshot, in: try await loadSnapshots())
        let comps = try Self.snapshotComponents(path, in: snap)
        let (node, tree) = try await lookup(root: snap.root, components: comps)
        let base = comps.joined(separator: "/")
        if let node, node.kind != .directory { return [Self.nodeInfo(base, node)] }
        var out: [NodeInfo] = []
        func walk(_ tree: Tree, _ prefix: String) async throws(BackupError) {
            for n in tree.nodes {
                let p = prefix.isEmpty ? n.nameString : prefix + "/" + n.nameString
                out.append(Self.nodeInfo(p, n))
                if recursive, n.kind == .directory, let sub = n.subtree {
                    try await walk(try await readTree(sub), p)
                }
            }
        }
        if let tree { try await walk(tree, base) }
        return out
    }

    func restoreStream(repository: Repository, snapshot: String, target: URL, options: RestoreOptions) -> AsyncThrowingStream<RestoreEvent, any Error> {
        AsyncThrowingStream(bufferingPolicy: .unbounded) { continuation in
            // On the I/O executor: the restore's file writes block their thread, never the
            // cooperative pool's.
            let task = Task(executorPreference: IOExecutor.restore) {
                do {
                    let summary = try await self.restore(snapshot: snapshot, target: target.path, options: options, events: continuation)
                    continuation.yield(.finished(summary))
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    func restore(snapshot: String, target rawTarget: String, options: RestoreOptions,
                 events: AsyncThrowingStream<RestoreEvent, any Error>.Continuation) async throws(BackupError) -> RestoreSummary {
        let started = ContinuousClock.now
        let all = try await loadSnapshots()
        let (snapID, snap) = try resolve(snapshot, in: all)
        try verifyHeads(all, doing: "restore from this repository")
        try await requireIndexed(snapID, snap)
        let target = Posix.absolute(rawTarget)

        // Target must be empty (or missing) unless overwrite.
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: target, isDirectory: &isDir) {
            guard isDir.boolValue else {
                throw BackupError(.targetNotEmpty, path: target, message: "restore target \(target) exists and is not a directory")
            }
            let contents = (try? FileManager.default.contentsOfDirectory(atPath: target)) ?? []
            if !contents.isEmpty && !options.overwrite {
                throw BackupError(.targetNotEmpty, path: target,
                                  message: "restore target \(target) is not empty; choose an empty directory or allow overwriting")
            }
        }
        do {
            try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
        } catch {
            throw BackupError(.fileSystem, path: target, message: "cannot create restore target \(target): \(BackupRun.reason(error))")
        }
        // Everything below the target is reached through directory handles, one component at a time,
        // never following a symlink (one already there, or one put there while the restore runs).
        let handles: TargetDirectories
        do { handles = try TargetDirectories(target: target, overwrite: options.overwrite) } catch {
            throw BackupError(.fileSystem, path: target, message: "cannot open restore target \(target): \(error)")
        }

        // Plan: walk the selected subtrees.
        var items: [RestoreItem] = []
        var dirs: [RestoreItem] = []
        var failures: [RestoreFailure] = []
        func walk(_ tree: Tree, _ prefix: String) async {
            for n in tree.nodes {
                let p = prefix.isEmpty ? n.nameString : prefix + "/" + n.nameString
                if n.kind == .directory {
                    dirs.append(RestoreItem(path: p, node: n))
                    guard let sub = n.subtree else { continue }
                    do { await walk(try await readTree(sub), p) } catch {
                        // Every entry the listing held counts as not restored (the count is kept in
                        // the parent listing since tree version 2).
                        let held = n.entriesBelow.map { "its \($0) file\($0 == 1 ? " is" : "s are")" } ?? "nothing below it is"
                        let f = RestoreFailure(path: p, object: error.object, code: error.code,
                                               message: "the listing of \(p) cannot be read, \(held) not restored: \(error.message)",
                                               files: n.entriesBelow.map { Int(clamping: $0) } ?? 1)
                        failures.append(f)
                        events.yield(.fileFailed(f))
                    }
                } else {
                    items.append(RestoreItem(path: p, node: n))
                }
            }
        }
        let includes = options.include.isEmpty ? [[]] : try options.include.map { p throws(BackupError) in
            try Self.snapshotComponents(p, in: snap)
        }
        for inc in includes {
            let (node, tree) = try await lookup(root: snap.root, components: inc)
            let base = inc.joined(separator: "/")
            // Parent directories of an included path are created plainly (no metadata of theirs is restored).
            if let node {
                if node.kind == .directory {
                    dirs.append(RestoreItem(path: base, node: node))
                } else {
                    items.append(RestoreItem(path: base, node: node))
                }
            }
            if let tree { await walk(tree, base) }
        }
        let fileItems = items.filter { $0.node.kind == .file }
        // Sizes are bounded by Tree.decode; the sum of many still must not trap.
        let totalBytes = fileItems.reduce(Int64(0)) { sum, i in
            let (s, over) = sum.addingReportingOverflow(Int64(clamping: i.node.size))
            return over ? Int64.max : s
        }
        events.yield(.planned(files: fileItems.count, bytes: totalBytes))

        for d in dirs {
            if case .failure(let e) = handles.withDirectory(d.path, create: true, { _ in }) {
                // The files below fail on their own (and are counted there).
                let f = RestoreFailure(path: d.path, object: nil, code: .fileSystem,
                                       message: "cannot create directory \(target)/\(d.path): \(e)", files: 0)
                failures.append(f)
                events.yield(.fileFailed(f))
            }
        }

        let state = await restoreFiles(items, target: target, handles: handles, overwrite: options.overwrite,
                                       fileCount: fileItems.count, totalBytes: totalBytes, started: started, events: events)
        if Task.isCancelled { throw BackupError(.cancelled, message: "the restore was cancelled") }
        // Directory metadata last, deepest first (creating entries would change their mtimes); owner
        // before mode (a chown clears set-id bits), each through the directory's own handle.
        let owners = Posix.restoresOwners
        for d in dirs.sorted(by: { $0.path.count > $1.path.count }) {
            _ = handles.withDirectory(d.path, create: false) { fd in
                if owners { _ = fchown(fd, uid_t(d.node.uid), gid_t(d.node.gid)) }
                _ = fchmod(fd, mode_t(d.node.mode))
                _ = Posix.setTimes(fd: fd, sec: d.node.mtimeSec, nsec: d.node.mtimeNsec)
            }
        }
        handles.closeAll()
        let p = state.progress.withLock { $0 }
        let allFailures = failures + p.failures
        return RestoreSummary(snapshotID: snapID.hex, filesRestored: p.restored, directoriesRestored: dirs.count,
                              symlinksRestored: p.symlinks, bytesRestored: p.bytes, failures: allFailures,
                              duration: ContinuousClock.now - started, fifosRestored: p.fifos, hardLinksRestored: p.links)
    }

    /// A path inside the snapshot as `ls` and `restore --include` accept it: relative to the root
    /// (`data/sub/file`), or absolute as it was on the machine that made the snapshot
    /// (`/home/me/data/sub/file`, when `/home/me/data` is one of the snapshot's paths).
    static func snapshotComponents(_ path: String?, in snap: Snapshot) throws(BackupError) -> [String] {
        guard let path, path.hasPrefix("/") else { return components(path) }
        let given = components(path)
        let paths = snap.paths
        // A root that mirrors the absolute paths takes them as they are.
        if snap.fullPaths { return given }
        // The longest source path that contains the given one (sources may nest).
        var best: [String]?
        for p in paths {
            let src = components(p)
            guard !src.isEmpty, given.count >= src.count, Array(given.prefix(src.count)) == src else { continue }
            if best == nil || src.count > best!.count { best = src }
        }
        guard let best else {
            throw BackupError(.pathNotFound, path: path,
                              message: "\(path) is not in the snapshot: it is below none of its paths (\(paths.joined(separator: ", ")))")
        }
        return [best.last!] + given.dropFirst(best.count)
    }

    /// Splits `a/b/c` into the directory (`a/b`, `""` at the top) and the name (`c`).
    static func split(_ path: String) -> (dir: String, name: String) {
        guard let slash = path.lastIndex(of: "/") else { return ("", path) }
        return (String(path[..<slash]), String(path[path.index(after: slash)...]))
    }

    static func restoreSymlink(_ item: RestoreItem, handles: TargetDirectories, overwrite: Bool) -> RestoreFailure? {
        let (dir, name) = split(item.path)
        let result = handles.withDirectory(dir, create: true) { dfd -> Int32? in
            if overwrite { _ = unlinkat(dfd, name, 0) }
            var t = item.node.linkTarget
            t.append(0)
            let ok = t.withUnsafeBufferPointer {
                symlinkat(UnsafeRawPointer($0.baseAddress!).assumingMemoryBound(to: CChar.self), dfd, name) == 0
            }
            guard ok else { return errno }
            if Posix.restoresOwners { _ = fchownat(dfd, name, uid_t(item.node.uid), gid_t(item.node.gid), AT_SYMLINK_NOFOLLOW) }
            _ = Posix.setTimes(at: dfd, name, sec: item.node.mtimeSec, nsec: item.node.mtimeNsec)
            return nil
        }
        let why: String
        switch result {
        case .success(nil): return nil
        case .success(let e?): why = Errno(e).description
        case .failure(let e): why = e.description
        }
        return RestoreFailure(path: item.path, object: nil, code: .fileSystem,
                              message: "cannot create symlink \(item.path): \(why)")
    }

    /// A named pipe, created empty; its mode, owner and times are set through a descriptor opened
    /// without following (and checked to be the pipe just made).
    static func restoreFIFO(_ item: RestoreItem, handles: TargetDirectories, overwrite: Bool) -> RestoreFailure? {
        let (dir, name) = split(item.path)
        let result = handles.withDirectory(dir, create: true) { dfd -> Int32? in
            if overwrite { _ = unlinkat(dfd, name, 0) }
            guard mkfifoat(dfd, name, 0o600) == 0 else { return errno }
            let fd = Posix.openNoFollow(at: dfd, name, O_RDONLY | O_NONBLOCK)
            guard fd >= 0 else { return errno }
            defer { close(fd) }
            guard case .success(let st) = FileStat.fstat(fd), st.isFIFO else { return EEXIST }
            if Posix.restoresOwners { _ = fchown(fd, uid_t(item.node.uid), gid_t(item.node.gid)) }
            _ = fchmod(fd, mode_t(item.node.mode))
            _ = Posix.setTimes(fd: fd, sec: item.node.mtimeSec, nsec: item.node.mtimeNsec)
            return nil
        }
        let why: String
        switch result {
        case .success(nil): return nil
        case .success(let e?): why = Errno(e).description
        case .failure(let e): why = e.description
        }
        return RestoreFailure(path: item.path, object: nil, code: .fileSystem,
                              message: "cannot create named pipe \(item.path): \(why)")
    }
}

/// Descriptors of directories below a restore target. Each is opened from the target one path
/// component at a time with `O_NOFOLLOW | O_DIRECTORY`, so no symlink in the target (one planted
/// before the restore, or while it runs) is ever followed: such an entry fails (ELOOP/ENOTDIR), or,
/// with `--overwrite`, is removed and replaced by a real directory. At most `limit` unused
/// descriptors stay open (the others are closed and opened again when needed).
final class TargetDirectories: Sendable {
    let target: String
    let overwrite: Bool
    private let rootFD: Int32
    private struct Entry {
        var fd: Int32
        var users: Int
    }
    /// Open descriptors by relative path, with how many callers use each right now.
    private let open = Mutex<[String: Entry]>([:])
    private let limit = 64

    init(target: String, overwrite: Bool) throws(Errno) {
        self.target = target
        self.overwrite = overwrite
        // The target itself is the user's choice and may be reached through a symlink.
        let fd = Posix.open(target, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw Errno(errno) }
        rootFD = fd
    }

    deinit { closeAll(); close(rootFD) }

    /// Runs `body` with a descriptor of the directory at `relative` (`""` is the target), created
    /// (0700, metadata comes later) when `create` and missing.
    func withDirectory<T>(_ relative: String, create: Bool, _ body: (Int32) -> T) -> Result<T, Errno> {
        if relative.isEmpty { return .success(body(rootFD)) }
        let fd: Int32
        switch acquire(relative, create: create) {
        case .success(let f): fd = f
        case .failure(let e): return .failure(e)
        }
        defer { release(relative) }
        return .success(body(fd))
    }

    func closeAll() {
        open.withLock { all in
            for (_, e) in all { close(e.fd) }
            all = [:]
        }
    }

    private func acquire(_ relative: String, create: Bool) -> Result<Int32, Errno> {
        let cached: Int32? = open.withLock { all in
            guard let e = all[relative] else { return nil }
            all[relative]?.users += 1
            return e.fd
        }
        if let cached { return .success(cached) }
        let (parent, name) = Engine.split(relative)
        let opened: Result<Int32, Errno>
        if parent.isEmpty {
            opened = Self.step(rootFD, name, create: create, overwrite: overwrite)
        } else {
            switch withDirectory(parent, create: create, { Self.step($0, name, create: create, overwrite: overwrite) }) {
            case .success(let r): opened = r
            case .failure(let e): opened = .failure(e)
            }
        }
        guard case .success(let fd) = opened else { return opened }
        let limit = self.limit
        return open.withLock { all in
            if let e = all[relative] {  // another task opened it meanwhile
                close(fd)
                all[relative]?.users += 1
                return .success(e.fd)
            }
            if all.count >= limit {
                for (k, e) in all where e.users == 0 {
                    close(e.fd)
                    all[k] = nil
                }
            }
            all[relative] = Entry(fd: fd, users: 1)
            return .success(fd)
        }
    }

    private func release(_ relative: String) {
        open.withLock { $0[relative]?.users -= 1 }
    }

    /// One component: open it as a directory without following; create it when missing; with
    /// overwrite, replace a non-directory (a symlink, a file) by a directory.
    private static func step(_ dfd: Int32, _ name: String, create: Bool, overwrite: Bool) -> Result<Int32, Errno> {
        var fd = Posix.openDirectory(at: dfd, name)
        if fd >= 0 { return .success(fd) }
        var err = errno
        guard create else { return .failure(Errno(err)) }
        if err == ELOOP || err == ENOTDIR || err == EMLINK {
            // Something that is not a directory (a symlink is never followed).
            guard overwrite else { return .failure(Errno(ENOTDIR)) }
            guard unlinkat(dfd, name, 0) == 0 else { return .failure(Errno(errno)) }
            err = ENOENT
        }
        guard err == ENOENT else { return .failure(Errno(err)) }
        guard mkdirat(dfd, name, 0o700) == 0 || errno == EEXIST else { return .failure(Errno(errno)) }
        fd = Posix.openDirectory(at: dfd, name)
        return fd >= 0 ? .success(fd) : .failure(Errno(errno == ELOOP ? ENOTDIR : errno))
    }
}

final class RestoreState: Sendable {
    struct Progress {
        var files = 0
        /// Bytes of files restored (complete and renamed into place).
        var bytes: Int64 = 0
        /// Bytes written so far, for progress.
        var written: Int64 = 0
        var restored = 0
        var symlinks = 0
        var fifos = 0
        /// Files restored as a hard link to another restored file (also counted in `restored`).
        var links = 0
        var failures: [RestoreFailure] = []
        var lastPath: String?
    }
    let progress = Mutex(Progress())
    let lastEmit = Mutex(ContinuousClock.now)
}
