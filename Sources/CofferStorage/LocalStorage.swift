import Synchronization
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Darwin)
import Foundation  // FileManager.startDownloadingUbiquitousItem (iCloud Drive)
#endif
#if canImport(Darwin)
import Darwin
#elseif canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CofferPosix

/// A repository in a local folder: the embedded default, and what a user points at a synced
/// cloud-drive folder.
///
/// Each object is one file under the root (`data/3f/3fa1...` → `ROOT/data/3f/3fa1...`).
/// Crash safety of ``put(_:data:)``: the bytes go to a temporary file in the destination directory
/// (named with a `~`, which no object name can contain, so ``list(prefix:)`` never shows it), are
/// fsync-ed, renamed over the final name, and the directory is fsync-ed. After a crash a reader sees
/// the old object or the new one, never a prefix; leftover temporary files are harmless and are
/// removed by ``removeTemporaryFiles()``.
public struct LocalStorage: Storage {
    /// Absolute or relative path of the repository folder, without a trailing `/`.
    public let root: String

    public var location: String { root }

    /// Opens the folder at `root`.
    /// - Parameters:
    ///   - root: the repository folder.
    ///   - create: create the folder (and missing parents, mode 0700) when it does not exist.
    /// - Throws: `.missingContainer` when it does not exist (and `create` is false) or is not a
    ///   folder, `.accessDenied` when it cannot be read.
    public init(root: String, create: Bool = false) throws(StorageError) {
        var r = root
        while r.count > 1 && r.hasSuffix("/") { r.removeLast() }
        guard !r.isEmpty else {
            throw StorageError(.missingContainer, message: "no repository folder given")
        }
        self.root = r
        var st = FileStatus()
        if posixStat(r, &st) != 0 {
            let e = errno
            if e == ENOENT && create {
                try Self.makeDirectories(r, durableFrom: nil)
            } else if e == ENOENT {
                throw StorageError(.missingContainer, message: "repository folder \(r) does not exist")
            } else {
                throw Self.error(e, name: nil, doing: "open repository folder \(r)")
            }
        } else if (st.st_mode & S_IFMT) != S_IFDIR {
            throw StorageError(.missingContainer, message: "\(r) is not a folder")
        }
        if access(r, R_OK | X_OK) != 0 {
            throw Self.error(errno, name: nil, doing: "read repository folder \(r)")
        }
    }

    // MARK: Storage

    public func put(_ name: String, data: Data) async throws(StorageError) {
        try write(name, data: data, exclusive: false)
    }

    public func create(_ name: String, data: Data) async throws(StorageError) {
        try write(name, data: data, exclusive: true)
    }

    public func get(_ name: String, range: Range<Int>?) async throws(StorageError) -> Data {
        try check(name)
        let path = self.path(name)
        var fd = Posix.open(path, O_RDONLY | O_CLOEXEC, 0)
        if fd < 0 && errno == ENOENT && placeholderExists(name) {
            // In iCloud Drive but not on this device: download it (Apple) or say so (elsewhere).
            try materialize(name)
            fd = Posix.open(path, O_RDONLY | O_CLOEXEC, 0)
        }
        guard fd >= 0 else {
            let e = errno
            if e == ENOENT || e == ENOTDIR { throw StorageError.notFound(name) }
            throw Self.error(e, name: name, doing: "read")
        }
        defer { _ = Posix.close(fd) }
        var st = FileStatus()
        guard fstat(fd, &st) == 0 else { throw Self.error(errno, name: name, doing: "read") }
        let size = Int(st.st_size)
        let wanted = range ?? 0..<size
        guard wanted.lowerBound >= 0, wanted.upperBound <= size else {
            throw StorageError.rangeNotSatisfiable(name: name, size: size)
        }
        var out = Data(count: wanted.count)
        var done = 0
        let failure: Int32? = out.withUnsafeMutableBytes { buf -> Int32? in
            while done < wanted.count {
                let n = pread(fd, buf.baseAddress! + done, wanted.count - done, off_t(wanted.lowerBound + done))
                if n < 0 {
                    if errno == EINTR { continue }
                    return errno
                }
                if n == 0 { return nil }  // shrank underneath us: reported below
                done += n
            }
            return nil
        }
        if let failure { throw Self.error(failure, name: name, doing: "read") }
        guard done == wanted.count else {
            throw StorageError(.transient, name: name, message: "object \(name) changed size while being read")
        }
        return out
    }

    public func stat(_ name: String) async throws(StorageError) -> ObjectInfo? {
        try check(name)
        var st = FileStatus()
        if posixStat(path(name), &st) != 0 {
            let e = errno
            if e == ENOENT, let placeholder = placeholderInfo(name) { return placeholder }
            if e == ENOENT || e == ENOTDIR { return nil }
            throw Self.error(e, name: name, doing: "look up")
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else { return nil }
        return ObjectInfo(name: name, size: Int(st.st_size), modified: Self.mtime(st))
    }

    public func list(prefix: String) async throws(StorageError) -> [ObjectInfo] {
        var out: [ObjectInfo] = []
        try walk(relative: "", prefix: prefix, into: &out)
        return out
    }

    public func delete(_ name: String) async throws(StorageError) {
        try check(name)
        if unlink(path(name)) != 0 {
            let e = errno
            if e == ENOENT || e == ENOTDIR {
                // Not downloaded to this device: removing the placeholder removes it from iCloud Drive.
                if e == ENOENT, unlink(placeholderPath(name)) != 0, errno != ENOENT, errno != ENOTDIR {
                    throw Self.error(errno, name: name, doing: "delete")
                }
                return
            }
            throw Self.error(e, name: name, doing: "delete")
        }
    }

    /// Removes temporary files left by writers that crashed (call when no writer is running).
    /// - Returns: how many were removed.
    @discardableResult
    public func removeTemporaryFiles() throws(StorageError) -> Int {
        var removed = 0
        for t in try temporaryFiles() where unlink("\(root)/\(t.name)") == 0 { removed += 1 }
        return removed
    }

    /// The temporary files of unfinished writes (`.NAME.RANDOM~tmp` beside the object being
    /// written): a writer that was killed, or one still writing. `name` is the path relative to the
    /// root, `modified` the file's timestamp (the same clock as the objects').
    public func temporaryFiles() throws(StorageError) -> [ObjectInfo] {
        var out: [ObjectInfo] = []
        try walkTemporaries(relative: "", into: &out)
        return out
    }

    /// Removes one temporary file listed by ``temporaryFiles()`` (missing: no error).
    public func removeTemporaryFile(_ name: String) throws(StorageError) {
        let last = Self.basename(name)
        guard last.hasPrefix("."), last.hasSuffix("~tmp"), !name.contains(".."), !name.hasPrefix("/") else {
            throw StorageError.invalidName(name)
        }
        if unlink("\(root)/\(name)") != 0, errno != ENOENT { throw Self.error(errno, name: name, doing: "delete") }
    }

    // MARK: iCloud Drive

    /// Conflict copies a syncing drive made of objects (iCloud Drive: `NAME 2`, `NAME 3`, and
    /// `.NAME 2.icloud` when not downloaded), relative to the root. They are never data: Coffer
    /// writes each object once, so a copy can only come from two devices creating one name, and the
    /// object under its own name is the one Coffer reads. Listings skip them; `coffer check` names
    /// them so they can be deleted.
    public func conflictCopies() throws(StorageError) -> [String] {
        var out: [String] = []
        try walkConflictCopies(relative: "", into: &out)
        return out.sorted()
    }

    /// The object an iCloud Drive conflict copy's file name stands for (`3fa1 2` → `3fa1`,
    /// `.3fa1 2.icloud` → `3fa1`), or `nil` when the name is not one.
    static func conflictOriginal(_ entry: String) -> String? {
        var name = Substring(entry)
        if let object = placeholderObject(entry, validOnly: false) { name = Substring(object) }
        guard let space = name.lastIndex(of: " ") else { return nil }
        let number = name[name.index(after: space)...]
        let original = String(name[..<space])
        guard !number.isEmpty, number.allSatisfy({ $0.isASCII && $0.isNumber }), ObjectName.isValid(original) else { return nil }
        return original
    }

    /// `NAME` for an iCloud Drive placeholder `.NAME.icloud`, else `nil`.
    static func placeholderObject(_ entry: String, validOnly: Bool = true) -> String? {
        guard entry.hasPrefix("."), entry.hasSuffix(".icloud"), entry.utf8.count > 8 else { return nil }
        let object = String(entry.dropFirst().dropLast(7))
        if validOnly && !ObjectName.isValid(object) { return nil }
        return object
    }

    private func placeholderPath(_ name: String) -> String {
        let full = path(name)
        return "\(Self.parent(full))/.\(Self.basename(full)).icloud"
    }

    private func placeholderExists(_ name: String) -> Bool {
        var st = FileStatus()
        return posixStat(placeholderPath(name), &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG
    }

    /// The object behind a placeholder: its size from the placeholder (a property list iCloud writes
    /// with `NSURLFileSizeKey`), its time the placeholder's.
    private func placeholderInfo(_ name: String) -> ObjectInfo? {
        let placeholder = placeholderPath(name)
        var st = FileStatus()
        guard posixStat(placeholder, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return nil }
        let size = FileManager.default.contents(atPath: placeholder).flatMap(Self.placeholderSize) ?? 0
        return ObjectInfo(name: name, size: size, modified: Self.mtime(st))
    }

    private struct PlaceholderProperties: Decodable {
        var NSURLFileSizeKey: Int?
    }

    static func placeholderSize(_ data: Data) -> Int? {
        (try? PropertyListDecoder().decode(PlaceholderProperties.self, from: data))?.NSURLFileSizeKey
    }

    /// How long a read waits for iCloud Drive to download an object (Apple platforms).
    public static let downloadTimeout: Double = 120

    /// Makes a not-downloaded object local. On Apple platforms: asks iCloud Drive to download it and
    /// waits (bounded by ``downloadTimeout``) until the file is there. Elsewhere a placeholder can
    /// only have been copied from an Apple device: a clear error naming the file.
    private func materialize(_ name: String) throws(StorageError) {
        #if canImport(Darwin)
        let url = URL(fileURLWithPath: path(name))
        do {
            try FileManager.default.startDownloadingUbiquitousItem(at: url)
        } catch {
            throw StorageError(.transient, name: name, message: "object \(name) is in iCloud Drive but not on this device, and its download could not start: \(error.localizedDescription)")
        }
        let deadline = Date().addingTimeInterval(Self.downloadTimeout)
        var st = FileStatus()
        while Date() < deadline {
            if posixStat(path(name), &st) == 0 { return }
            usleep(100_000)
        }
        throw StorageError(.transient, name: name, message: "object \(name) is in iCloud Drive but was not downloaded to this device within \(Int(Self.downloadTimeout)) s; check the network and iCloud, then retry")
        #else
        throw StorageError(.permanent, name: name, message: "object \(name) is an iCloud Drive placeholder (\(placeholderPath(name))) whose bytes are not on this device; download it on an Apple device (or copy the repository from one where it is downloaded)")
        #endif
    }

    private func readForCompare(_ name: String) throws(StorageError) -> Data {
        var st = FileStatus()
        if posixStat(path(name), &st) != 0 {
            guard placeholderExists(name) else { throw StorageError.notFound(name) }
            try materialize(name)
        }
        do { return try readWhole(path(name)) } catch { throw StorageError.notFound(name) }
    }

    private func walkConflictCopies(relative: String, into out: inout [String]) throws(StorageError) {
        let dirPath = relative.isEmpty ? root : "\(root)/\(relative)"
        let entries: [String]
        do { entries = try Self.readDirectory(dirPath) } catch {
            if error.code == .notFound { return }
            throw error
        }
        for entry in entries {
            let rel = relative.isEmpty ? entry : "\(relative)/\(entry)"
            var st = FileStatus()
            guard posixLstat("\(root)/\(rel)", &st) == 0 else { continue }
            if (st.st_mode & S_IFMT) == S_IFDIR {
                if ObjectName.isValid(rel) { try walkConflictCopies(relative: rel, into: &out) }
            } else if (st.st_mode & S_IFMT) == S_IFREG, let original = Self.conflictOriginal(entry),
                      ObjectName.isValid(relative.isEmpty ? original : "\(relative)/\(original)") {
                out.append(rel)
            }
        }
    }

    // MARK: Writing

    private func readWhole(_ path: String) throws -> Data {
        guard let data = FileManager.default.contents(atPath: path) else { throw StorageError.notFound(path) }
        return data
    }

    private func write(_ name: String, data: Data, exclusive: Bool) throws(StorageError) {
        // A prune removes temporary files older than its grace period; a writer suspended in the
        // middle of a write (a laptop lid, SIGSTOP) can find its own removed when it resumes. The
        // bytes are still here: write them again rather than fail the whole backup.
        for _ in 0..<3 {
            if try writeOnce(name, data: data, exclusive: exclusive) { return }
        }
        throw StorageError(.transient, name: name,
                           message: "cannot write \(name): its temporary file was removed three times before it could be renamed (is another program cleaning \(root)?)")
    }

    /// The alignment of memory and length that ``writeAll(_:_:)`` writes with `O_DIRECT`.
    package static let directIOAlignment = 4096

    /// Writes all of `buf`; returns the errno of a failure (nil when all was written) and how many
    /// bytes went with `O_DIRECT`. Where the memory is aligned to
    /// ``directIOAlignment`` (a pack from `PackWriter`) and the file system allows it, the aligned
    /// prefix goes with `O_DIRECT` (Linux), straight from this memory to the disk, and the rest
    /// through the page cache. On the 2-core test machine, 450 packs of 2 MiB written and fsync-ed
    /// one after another took 4.0-5.3 s (2.9-4.1 CPU-s) through the page cache and 1.1-1.2 s
    /// (0.25 CPU-s) this way. The caller's fsync makes both parts durable, as for any write.
    package static func writeAll(_ fd: Int32, _ buf: UnsafeRawBufferPointer) -> (errno: Int32?, directBytes: Int) {
        guard let base = buf.baseAddress else { return (nil, 0) }
        let a = directIOAlignment
        let directEnd = buf.count / a * a
        var direct = directEnd > 0 && Int(bitPattern: base) % a == 0 && Posix.setDirectIO(fd, true)
        var written = 0
        var directBytes = 0
        while written < buf.count {
            if direct && written >= directEnd {
                _ = Posix.setDirectIO(fd, false)
                direct = false
            }
            let n = Posix.write(fd, base + written, (direct ? directEnd : buf.count) - written)
            if n < 0 {
                if errno == EINTR { continue }
                if direct && errno == EINVAL {
                    // The file system took the flag but not this write (a block size above 4 KiB,
                    // or a short direct write left the offset unaligned): go on through the cache.
                    _ = Posix.setDirectIO(fd, false)
                    direct = false
                    continue
                }
                return (errno, directBytes)
            }
            written += n
            if direct { directBytes += n }
        }
        return (nil, directBytes)
    }

    /// One attempt: `false` when the temporary file vanished before it got its final name.
    private func writeOnce(_ name: String, data: Data, exclusive: Bool) throws(StorageError) -> Bool {
        try check(name)
        let finalPath = path(name)
        let dir = Self.parent(finalPath)
        if dir != root {
            try Self.makeDirectories(dir, durableFrom: root)
        }
        let tmpPath = "\(dir)/.\(Self.basename(finalPath)).\(Self.randomSuffix())~tmp"

        let fd = Posix.open(tmpPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw Self.error(errno, name: name, doing: "write") }
        var fdOpen = true
        func fail(_ e: Int32, _ doing: String) -> StorageError {
            if fdOpen { _ = Posix.close(fd); fdOpen = false }
            _ = unlink(tmpPath)
            return Self.error(e, name: name, doing: doing)
        }

        let writeError: Int32? = data.withUnsafeBytes { Self.writeAll(fd, $0).errno }
        if let writeError { throw fail(writeError, "write") }
        if Self.crashAfterTemporaryWrite.withLock({ $0 }) { kill(getpid(), SIGKILL) }
        if Posix.fsync(fd) != 0 { throw fail(errno, "flush") }
        // close can report a deferred write error (NFS, some FUSE drives): do not ignore it.
        fdOpen = false
        if Posix.close(fd) != 0 { throw fail(errno, "write") }
        if let hook = Self.beforeFinalName.withLock({ $0 }) { hook(tmpPath) }

        if exclusive && placeholderExists(name) {
            // The name is taken in iCloud Drive by an object not downloaded here: compare its bytes.
            _ = unlink(tmpPath)
            let existing: Data
            do { existing = try readForCompare(name) } catch where error.code == .notFound { return false }
            if existing == data { return true }
            throw StorageError(.alreadyExists, name: name, message: "object \(name) already exists")
        }
        if exclusive {
            // link(2) fails with EEXIST when the name is taken: the check and the creation are one step.
            if link(tmpPath, finalPath) != 0 {
                let e = errno
                if e == EEXIST {
                    _ = unlink(tmpPath)
                    if let existing = try? readWhole(finalPath), existing == data { return true }
                    throw StorageError(.alreadyExists, name: name, message: "object \(name) already exists")
                }
                if e == ENOENT { return false }
                if e == EPERM || e == ENOTSUP || e == EOPNOTSUPP || e == EXDEV || e == EMLINK {
                    // FAT/exFAT and some network mounts have no hard links: an atomic
                    // rename-unless-taken does the same where the system has one; otherwise
                    // refuse rather than quietly lose the put-if-absent guarantee.
                    switch Self.renameNoReplace(tmpPath, finalPath) {
                    case 0:
                        try Self.syncDirectory(dir, name: name)
                        return true
                    case ENOENT:
                        return false
                    case EEXIST:
                        _ = unlink(tmpPath)
                        if let existing = try? readWhole(finalPath), existing == data { return true }
                        throw StorageError(.alreadyExists, name: name, message: "object \(name) already exists")
                    default:
                        _ = unlink(tmpPath)
                    }
                    throw StorageError(.permanent, name: name, message: "cannot create \(name): the file system at \(root) supports neither hard links nor an exclusive rename, which conditional creates need")
                }
                _ = unlink(tmpPath)
                throw Self.error(e, name: name, doing: "create")
            }
            _ = unlink(tmpPath)
        } else if rename(tmpPath, finalPath) != 0 {
            if errno == ENOENT { return false }
            throw fail(errno, "rename")
        }
        try Self.syncDirectory(dir, name: name)
        return true
    }

    /// `mkdir -p` with mode 0700; every directory created is made durable by fsync-ing its parent.
    private static func makeDirectories(_ dir: String, durableFrom base: String?) throws(StorageError) {
        var st = FileStatus()
        if posixStat(dir, &st) == 0 {
            if (st.st_mode & S_IFMT) == S_IFDIR { return }
            throw StorageError(.permanent, message: "\(dir) exists and is not a folder")
        }
        let parent = Self.parent(dir)
        if parent != dir && parent != base {
            try makeDirectories(parent, durableFrom: base)
        }
        if mkdir(dir, 0o700) != 0 {
            let e = errno
            if e == EEXIST { return }  // a concurrent writer made it
            if e == ENOENT && base != nil {
                throw StorageError(.missingContainer, message: "repository folder \(base!) has disappeared")
            }
            throw error(e, name: nil, doing: "create folder \(dir)")
        }
        try syncDirectory(parent, name: nil)
    }

    private static func syncDirectory(_ dir: String, name: String?) throws(StorageError) {
        let fd = Posix.open(dir, O_RDONLY | O_CLOEXEC, 0)
        guard fd >= 0 else { throw error(errno, name: name, doing: "sync folder") }
        defer { _ = Posix.close(fd) }
        if Posix.fsync(fd) != 0 {
            let e = errno
            // Some file systems (certain FUSE and network mounts) cannot fsync a directory.
            if e == EINVAL || e == ENOTSUP || e == EBADF { return }
            throw error(e, name: name, doing: "sync folder")
        }
    }

    // MARK: Listing

    private func walk(relative: String, prefix: String, into out: inout [ObjectInfo]) throws(StorageError) {
        let dirPath = relative.isEmpty ? root : "\(root)/\(relative)"
        let entries: [String]
        do {
            entries = try Self.readDirectory(dirPath)
        } catch {
            if error.code == .notFound { return }
            throw error
        }
        let present = Set(entries)
        for entry in entries {
            if let object = Self.placeholderObject(entry) {
                // iCloud Drive's `.NAME.icloud`: the object NAME, not downloaded to this device.
                let rel = relative.isEmpty ? object : "\(relative)/\(object)"
                guard !present.contains(object), ObjectName.isValid(rel), rel.hasPrefix(prefix) else { continue }
                if let info = placeholderInfo(rel) { out.append(info) }
                continue
            }
            let rel = relative.isEmpty ? entry : "\(relative)/\(entry)"
            // Skip temporary files, dot-files the OS drops in (.DS_Store has capitals), conflict
            // copies (`NAME 2`) and anything that is not an object name.
            guard ObjectName.isValid(rel) else { continue }
            // Only descend where the prefix can still match.
            if !(rel.hasPrefix(prefix) || prefix.hasPrefix(rel + "/") || prefix.hasPrefix(rel)) { continue }
            var st = FileStatus()
            if posixLstat("\(root)/\(rel)", &st) != 0 {
                let e = errno
                if e == ENOENT { continue }  // deleted while listing
                throw Self.error(e, name: rel, doing: "list")
            }
            switch st.st_mode & S_IFMT {
            case S_IFDIR:
                try walk(relative: rel, prefix: prefix, into: &out)
            case S_IFREG where rel.hasPrefix(prefix):
                out.append(ObjectInfo(name: rel, size: Int(st.st_size), modified: Self.mtime(st)))
            default:
                continue
            }
        }
    }

    private func walkTemporaries(relative: String, into out: inout [ObjectInfo]) throws(StorageError) {
        let dirPath = relative.isEmpty ? root : "\(root)/\(relative)"
        let entries: [String]
        do { entries = try Self.readDirectory(dirPath) } catch {
            if error.code == .notFound { return }  // removed while walking
            throw error
        }
        for entry in entries {
            let rel = relative.isEmpty ? entry : "\(relative)/\(entry)"
            var st = FileStatus()
            guard posixLstat("\(root)/\(rel)", &st) == 0 else { continue }
            if (st.st_mode & S_IFMT) == S_IFDIR {
                if ObjectName.isValid(rel) { try walkTemporaries(relative: rel, into: &out) }
            } else if (st.st_mode & S_IFMT) == S_IFREG, entry.hasPrefix("."), entry.hasSuffix("~tmp") {
                out.append(ObjectInfo(name: rel, size: Int(st.st_size), modified: Self.mtime(st)))
            }
        }
    }

    private static func readDirectory(_ path: String) throws(StorageError) -> [String] {
        guard let dir = opendir(path) else {
            let e = errno
            if e == ENOENT || e == ENOTDIR { throw StorageError(.notFound, message: "folder \(path) does not exist") }
            throw error(e, name: nil, doing: "list \(path)")
        }
        defer { closedir(dir) }
        var names: [String] = []
        while true {
            errno = 0
            guard let entry = readdir(dir) else {
                if errno != 0 { throw error(errno, name: nil, doing: "list \(path)") }
                break
            }
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw -> String in
                let bytes = raw.bindMemory(to: UInt8.self)
                let len = bytes.firstIndex(of: 0) ?? bytes.count
                return String(decoding: bytes[0..<len], as: UTF8.self)
            }
            if name == "." || name == ".." { continue }
            names.append(name)
        }
        return names
    }

    // MARK: Helpers

    /// Crash injection for the tests (as the engine's crash points, set through SPI, never from the
    /// environment): when true, the process kills itself (SIGKILL) in its first write, right after
    /// the bytes went to the temporary file, leaving that file behind as a crash mid-write does.
    /// (`coffer` debug builds set it from `COFFER_TEST_CRASH_AT=storage-temporary-written`.)
    @_spi(Testing) public static let crashAfterTemporaryWrite = Mutex(false)

    /// Called with the temporary file's path right before it gets its final name (tests: remove it
    /// there, as a prune does to a suspended writer's temporary file).
    @_spi(Testing) public static let beforeFinalName = Mutex<(@Sendable (String) -> Void)?>(nil)

    private func check(_ name: String) throws(StorageError) {
        guard ObjectName.isValid(name) else { throw StorageError.invalidName(name) }
    }

    private func path(_ name: String) -> String { "\(root)/\(name)" }

    private static func parent(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        if slash == path.startIndex { return "/" }
        return String(path[..<slash])
    }

    private static func basename(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return path }
        return String(path[path.index(after: slash)...])
    }

    private static func randomSuffix() -> String {
        var g = SystemRandomNumberGenerator()
        return String(g.next() as UInt64, radix: 16)
    }

    private static func mtime(_ st: FileStatus) -> Date {
        #if canImport(Darwin)
        let ts = st.st_mtimespec
        #else
        let ts = st.st_mtim
        #endif
        return Date(timeIntervalSince1970: Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9)
    }

    /// Maps an errno to a storage error a user can act on.
    static func error(_ e: Int32, name: String?, doing: String) -> StorageError {
        let what = name.map { "\(doing) \($0)" } ?? doing
        let reason = String(cString: strerror(e))
        switch e {
        case ENOSPC, EDQUOT:
            return StorageError(.noSpace, name: name, message: "cannot \(what): no space left on the device (\(reason)); free some space and retry")
        case EACCES, EPERM:
            return StorageError(.accessDenied, name: name, message: "cannot \(what): permission denied (\(reason)); check the folder's owner and permissions")
        case EROFS:
            return StorageError(.accessDenied, name: name, message: "cannot \(what): the file system is read-only")
        case ENOENT:
            return StorageError(.notFound, name: name, message: "cannot \(what): \(reason)")
        case EINTR, EAGAIN, EIO, ETIMEDOUT:
            return StorageError(.transient, name: name, message: "cannot \(what): \(reason)")
        default:
            return StorageError(.permanent, name: name, message: "cannot \(what): \(reason)")
        }
    }
}

typealias FileStatus = stat

private func posixStat(_ path: String, _ st: inout FileStatus) -> Int32 { stat(path, &st) }
private func posixLstat(_ path: String, _ st: inout FileStatus) -> Int32 { lstat(path, &st) }

extension LocalStorage {
    /// Renames `from` to `to` unless `to` exists, atomically (Linux `renameat2(RENAME_NOREPLACE)`,
    /// Apple `renamex_np(RENAME_EXCL)`): the conditional create of file systems without hard links.
    /// Returns 0, or the errno (`EEXIST` when taken; `EINVAL`/`ENOSYS`/`ENOTSUP` when unsupported).
    static func renameNoReplace(_ from: String, _ to: String) -> Int32 { Posix.renameNoReplace(from, to) }
}
