import Foundation
import Synchronization
import CofferCore
import CofferStorage
import CofferPosix

/// The backup's first stage: walking the paths into a tree of scan entries (files unchanged since
/// the parent snapshot are reused as they are; the rest become jobs for the workers).
extension BackupRun {
    // MARK: Walk

    func makeNode(_ name: [UInt8], _ kind: TreeNode.Kind, _ st: FileStat) -> TreeNode {
        var n = TreeNode(name: name, kind: kind)
        st.apply(to: &n)
        return n
    }

    func walkEntry(path: String, name: [UInt8], st: FileStat, parentNode: TreeNode?) async -> ScanEntry? {
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
            return await walkDirectory(path: path, name: name, st: st, parentNode: parentNode?.kind == .directory ? parentNode : nil)
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
    func walkFullPaths(_ absPaths: [String], parentRoot: Tree?) async throws(BackupError) -> [ScanEntry] {
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
                        if let entry = await walkEntry(path: p, name: c, st: st, parentNode: pn) { container.children.append(entry) }
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
                    parentTree = try? await engine.readTree(sub)
                } else {
                    parentTree = nil
                }
            }
        }
        return root.children
    }

    func walkDirectory(path: String, name: [UInt8], st: FileStat, parentNode: TreeNode?) async -> ScanEntry? {
        let names: [String]
        do { names = try FileManager.default.contentsOfDirectory(atPath: path) } catch {
            unreadable(path, "cannot list directory: \(Self.reason(error))")
            return nil
        }
        directories += 1
        let dir = ScanDir(node: makeNode(name, .directory, st))
        var parentTree: Tree?
        if let sub = parentNode?.subtree {
            parentTree = try? await engine.readTree(sub)
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
            if let e = await walkEntry(path: childPath, name: childName, st: cst, parentNode: pn) { dir.children.append(e) }
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
            pipe.counters.withLock {
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
}
