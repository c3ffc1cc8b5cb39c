import Foundation
import Synchronization
import CofferCore
import CofferStorage

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
        }
        return NodeInfo(path: path, kind: kind, size: Int64(n.size), mode: n.mode, modified: n.modified,
                        linkTarget: n.kind == .symlink ? String(decoding: n.linkTarget, as: UTF8.self) : nil,
                        isDatabase: n.isDatabase)
    }

    func list(snapshot: String, path: String?, recursive: Bool) async throws(BackupError) -> [NodeInfo] {
        let (_, snap) = try resolve(snapshot, in: try await loadSnapshots())
        let comps = Self.components(path)
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
            let task = Task {
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
                        let f = RestoreFailure(path: p, object: error.object, code: error.code,
                                               message: "the listing of \(p) cannot be read, nothing below it is restored: \(error.message)")
                        failures.append(f)
                        events.yield(.fileFailed(f))
                    }
                } else {
                    items.append(RestoreItem(path: p, node: n))
                }
            }
        }
        let includes = options.include.isEmpty ? [[]] : options.include.map { Self.components($0) }
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
        let totalBytes = fileItems.reduce(Int64(0)) { $0 + Int64($1.node.size) }
        events.yield(.planned(files: fileItems.count, bytes: totalBytes))

        for d in dirs {
            let p = target + "/" + d.path
            do { try FileManager.default.createDirectory(atPath: p, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700]) } catch {
                let f = RestoreFailure(path: d.path, object: nil, code: .fileSystem, message: "cannot create directory \(p): \(BackupRun.reason(error))")
                failures.append(f)
                events.yield(.fileFailed(f))
            }
        }
        for i in items {
            let parent = (target + "/" + i.path).split(separator: "/").dropLast().joined(separator: "/")
            try? FileManager.default.createDirectory(atPath: "/" + parent, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        }

        let state = await restoreFiles(items, target: target, overwrite: options.overwrite, fileCount: fileItems.count,
                                       totalBytes: totalBytes, started: started, events: events)
        if Task.isCancelled { throw BackupError(.cancelled, message: "the restore was cancelled") }
        // Directory metadata last, deepest first (creating entries would change their mtimes).
        for d in dirs.sorted(by: { $0.path.count > $1.path.count }) {
            let p = target + "/" + d.path
            chmod(p, mode_t(d.node.mode))
            _ = Posix.setTimes(p, sec: d.node.mtimeSec, nsec: d.node.mtimeNsec)
        }
        let p = state.progress.withLock { $0 }
        return RestoreSummary(snapshotID: snapID.hex, filesRestored: p.restored, directoriesRestored: dirs.count,
                              symlinksRestored: p.symlinks, bytesRestored: p.bytes, failures: failures + p.failures,
                              duration: ContinuousClock.now - started)
    }

    static func restoreSymlink(_ item: RestoreItem, to dest: String, overwrite: Bool) -> RestoreFailure? {
        if overwrite { unlink(dest) }
        let ok = item.node.linkTarget.withUnsafeBufferPointer { b -> Bool in
            var t = Array(b)
            t.append(0)
            return t.withUnsafeBufferPointer { symlink(UnsafeRawPointer($0.baseAddress!).assumingMemoryBound(to: CChar.self), dest) == 0 }
        }
        guard ok else {
            return RestoreFailure(path: item.path, object: nil, code: .fileSystem,
                                  message: "cannot create symlink \(dest): \(String(cString: strerror(errno)))")
        }
        _ = Posix.setTimes(dest, sec: item.node.mtimeSec, nsec: item.node.mtimeNsec)
        return nil
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
        var failures: [RestoreFailure] = []
        var lastPath: String?
    }
    let progress = Mutex(Progress())
    let lastEmit = Mutex(ContinuousClock.now)
}
