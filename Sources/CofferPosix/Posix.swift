// The one POSIX layer of the package: stat, open, read and write loops, fsync (F_FULLFSYNC on
// Apple platforms, where plain fsync leaves data in the drive's cache), durable renames. Every module
// that touches files goes through it, so Glibc, Musl and Darwin differences live in one file.
// `package`: shared by Coffer's modules, not part of any product's API.
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#elseif canImport(Musl)
import Musl
#endif

/// The `lstat` fields the engine records, portable across Glibc and Darwin.
package struct FileStat: Sendable, Hashable {
    package enum Kind: Sendable { case regular, directory, symlink, other }
    package var kind: Kind
    package var mode: UInt32
    package var uid: UInt32
    package var gid: UInt32
    package var size: Int64
    package var mtimeSec: Int64
    package var mtimeNsec: UInt32
    package var ctimeSec: Int64
    package var ctimeNsec: UInt32
    package var inode: UInt64
    package var device: UInt64
    /// A named pipe (kind `.other`).
    package var isFIFO: Bool
    /// Hard link count.
    package var links: UInt32
    /// 512-byte blocks allocated (what a sparse file saves).
    package var blocks: Int64

    /// A socket or a device: nothing a backup can store.
    package var isSpecial: Bool { kind == .other && !isFIFO }

    package init(_ st: stat) {
        switch st.st_mode & S_IFMT {
        case S_IFREG: kind = .regular
        case S_IFDIR: kind = .directory
        case S_IFLNK: kind = .symlink
        default: kind = .other
        }
        mode = UInt32(st.st_mode & 0o7777)
        uid = UInt32(st.st_uid)
        gid = UInt32(st.st_gid)
        size = Int64(st.st_size)
        #if canImport(Darwin)
        mtimeSec = Int64(st.st_mtimespec.tv_sec)
        mtimeNsec = UInt32(st.st_mtimespec.tv_nsec)
        ctimeSec = Int64(st.st_ctimespec.tv_sec)
        ctimeNsec = UInt32(st.st_ctimespec.tv_nsec)
        #else
        mtimeSec = Int64(st.st_mtim.tv_sec)
        mtimeNsec = UInt32(st.st_mtim.tv_nsec)
        ctimeSec = Int64(st.st_ctim.tv_sec)
        ctimeNsec = UInt32(st.st_ctim.tv_nsec)
        #endif
        inode = UInt64(st.st_ino)
        device = UInt64(st.st_dev)
        isFIFO = st.st_mode & S_IFMT == S_IFIFO
        links = UInt32(clamping: st.st_nlink)
        blocks = Int64(st.st_blocks)
    }

    package static func lstat(_ path: String) -> Result<FileStat, Errno> {
        var st = stat()
        #if canImport(Darwin)
        let rc = Darwin.lstat(path, &st)
        #else
        let rc = Glibc.lstat(path, &st)
        #endif
        return rc == 0 ? .success(FileStat(st)) : .failure(Errno(errno))
    }

    package static func fstat(_ fd: Int32) -> Result<FileStat, Errno> {
        var st = stat()
        #if canImport(Darwin)
        let rc = Darwin.fstat(fd, &st)
        #else
        let rc = Glibc.fstat(fd, &st)
        #endif
        return rc == 0 ? .success(FileStat(st)) : .failure(Errno(errno))
    }

    /// `stat`: follows symlinks (for the folders on the way to a source, which may be links such as
    /// Darwin's `/tmp` -> `/private/tmp`).
    package static func statFollowing(_ path: String) -> Result<FileStat, Errno> {
        var st = stat()
        let rc = fstatat(AT_FDCWD, path, &st, 0)
        return rc == 0 ? .success(FileStat(st)) : .failure(Errno(errno))
    }

    /// `fstatat(dirfd, name, AT_SYMLINK_NOFOLLOW)`.
    package static func lstat(at dirfd: Int32, _ name: String) -> Result<FileStat, Errno> {
        var st = stat()
        let rc = fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW)
        return rc == 0 ? .success(FileStat(st)) : .failure(Errno(errno))
    }

}

/// An errno value with its message.
package struct Errno: Error, Sendable, CustomStringConvertible {
    package var code: Int32
    package init(_ code: Int32) { self.code = code }
    package var description: String { String(cString: strerror(code)) }
}

package enum Posix {
    package static func open(_ path: String, _ flags: Int32, _ mode: mode_t = 0) -> Int32 {
        #if canImport(Darwin)
        Darwin.open(path, flags, mode)
        #elseif canImport(Glibc)
        Glibc.open(path, flags, mode)
        #else
        Musl.open(path, flags, mode)
        #endif
    }

    /// Reads exactly `count` bytes at `offset` unless the file ends first; returns how many were read.
    package static func preadFully(_ fd: Int32, _ buf: UnsafeMutableRawPointer, count: Int, offset: Int64) throws(Errno) -> Int {
        var done = 0
        while done < count {
            let n = pread(fd, buf + done, count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw Errno(errno)
            }
            if n == 0 { break }
            done += n
        }
        return done
    }

    package static func writeFully(_ fd: Int32, _ buf: UnsafeRawBufferPointer) throws(Errno) {
        var done = 0
        while done < buf.count {
            let n = write(fd, buf.baseAddress! + done, buf.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw Errno(errno)
            }
            done += n
        }
    }

    package static func readlink(_ path: String) throws(Errno) -> [UInt8] {
        var buf = [UInt8](repeating: 0, count: 4096)
        let n = buf.withUnsafeMutableBufferPointer { p in
            #if canImport(Darwin)
            Darwin.readlink(path, UnsafeMutableRawPointer(p.baseAddress!).assumingMemoryBound(to: CChar.self), p.count)
            #else
            Glibc.readlink(path, UnsafeMutableRawPointer(p.baseAddress!).assumingMemoryBound(to: CChar.self), p.count)
            #endif
        }
        guard n >= 0 else { throw Errno(errno) }
        return Array(buf[0..<n])
    }

    /// Sets access and modification time (access = modification), without following a final symlink.
    package static func setTimes(_ path: String, sec: Int64, nsec: UInt32) -> Bool {
        setTimes(at: AT_FDCWD, path, sec: sec, nsec: nsec)
    }

    /// `utimensat(dirfd, name, AT_SYMLINK_NOFOLLOW)`: the entry itself, never what a symlink points to.
    package static func setTimes(at dirfd: Int32, _ name: String, sec: Int64, nsec: UInt32) -> Bool {
        var ts = (timespec(tv_sec: time_t(sec), tv_nsec: Int(nsec)), timespec(tv_sec: time_t(sec), tv_nsec: Int(nsec)))
        return withUnsafePointer(to: &ts) { p in
            p.withMemoryRebound(to: timespec.self, capacity: 2) { utimensat(dirfd, name, $0, AT_SYMLINK_NOFOLLOW) == 0 }
        }
    }

    /// `openat` with `O_NOFOLLOW | O_CLOEXEC` added: a symlink as the last component fails (ELOOP)
    /// instead of being followed.
    package static func openNoFollow(at dirfd: Int32, _ name: String, _ flags: Int32, _ mode: mode_t = 0) -> Int32 {
        openat(dirfd, name, flags | O_NOFOLLOW | O_CLOEXEC, mode)
    }

    /// A directory entry below `dirfd`, opened as a directory without following a symlink.
    package static func openDirectory(at dirfd: Int32, _ name: String) -> Int32 {
        openNoFollow(at: dirfd, name, O_RDONLY | O_DIRECTORY)
    }

    /// True when this process may give files away (`chown` to the stored owner): only root.
    package static var restoresOwners: Bool { geteuid() == 0 }

    /// The first offset at or after `offset` that holds data, where the file system can tell
    /// (`SEEK_DATA`); `nil` when unknown. Returns `Int64.max` when only a hole follows.
    package static func nextData(_ fd: Int32, from offset: Int64) -> Int64? {
        #if os(Linux) || canImport(Darwin)
        // SEEK_DATA: 3 on Linux (<unistd.h> with _GNU_SOURCE, which the Glibc module does not
        // export), 4 on Darwin (<sys/unistd.h>); spelled out so both build the same way.
        #if os(Linux)
        let seekData: Int32 = 3
        #else
        let seekData: Int32 = 4
        #endif
        let r = lseek(fd, off_t(offset), seekData)
        if r >= 0 { return Int64(r) }
        return errno == ENXIO ? Int64.max : nil
        #else
        return nil
        #endif
    }

    package static func setTimes(fd: Int32, sec: Int64, nsec: UInt32) -> Bool {
        var ts = (timespec(tv_sec: time_t(sec), tv_nsec: Int(nsec)), timespec(tv_sec: time_t(sec), tv_nsec: Int(nsec)))
        return withUnsafePointer(to: &ts) { p in
            p.withMemoryRebound(to: timespec.self, capacity: 2) { futimens(fd, $0) == 0 }
        }
    }

    /// A new private (0700) directory under the system temporary directory.
    package static func makePrivateTempDirectory(prefix: String, in parent: String? = nil) throws(Errno) -> String {
        let base = parent ?? NSTemporaryDirectory()
        var template = Array((base.hasSuffix("/") ? base : base + "/").utf8CString.dropLast())
        template.append(contentsOf: Array("\(prefix)-XXXXXX".utf8CString))
        let ok = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) != nil }
        guard ok else { throw Errno(errno) }
        return String(cString: template)
    }

    package static func absolute(_ path: String) -> String {
        let p = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        // Normalise . and .. and duplicate slashes lexically.
        var parts: [Substring] = []
        for c in p.split(separator: "/") {
            if c == "." { continue }
            if c == ".." { if !parts.isEmpty { parts.removeLast() }; continue }
            parts.append(c)
        }
        return "/" + parts.joined(separator: "/")
    }
}

extension Posix {
    /// `close(2)`.
    @discardableResult
    package static func close(_ fd: Int32) -> Int32 {
        #if canImport(Darwin)
        return Darwin.close(fd)
        #elseif canImport(Glibc)
        return Glibc.close(fd)
        #else
        return Musl.close(fd)
        #endif
    }

    /// One `write(2)` call: the count written, or -1.
    package static func write(_ fd: Int32, _ p: UnsafeRawPointer, _ n: Int) -> Int {
        #if canImport(Darwin)
        return Darwin.write(fd, p, n)
        #elseif canImport(Glibc)
        return Glibc.write(fd, p, n)
        #else
        return Musl.write(fd, p, n)
        #endif
    }

    /// Turns `O_DIRECT` on or off for an open file: on Linux, writes then go from the caller's memory
    /// to the disk without a copy into the page cache (address, length and file offset must be
    /// multiples of the device's logical block size; durability still needs ``fsync(_:)``). False
    /// where the platform or the file system cannot (tmpfs, some FUSE mounts, Apple platforms): the
    /// caller writes through the page cache.
    package static func setDirectIO(_ fd: Int32, _ on: Bool) -> Bool {
        #if os(Linux) && (arch(x86_64) || arch(arm64))
        // O_DIRECT is in <fcntl.h> only with _GNU_SOURCE, which the Glibc module does not export;
        // its value differs by architecture (asm/fcntl.h): 0o40000 on x86_64, 0o200000 on arm64.
        #if arch(x86_64)
        let direct: Int32 = 0o40000
        #else
        let direct: Int32 = 0o200000
        #endif
        let flags = fcntl(fd, F_GETFL)
        guard flags >= 0 else { return false }
        return fcntl(fd, F_SETFL, on ? flags | direct : flags & ~direct) == 0
        #else
        return false
        #endif
    }

    /// Makes the file's data durable: `fsync(2)`, and on Apple platforms `F_FULLFSYNC` first,
    /// because there `fsync` only hands the data to the drive, whose cache a power loss empties.
    package static func fsync(_ fd: Int32) -> Int32 {
        #if canImport(Darwin)
        if fcntl(fd, F_FULLFSYNC) == 0 { return 0 }
        return Darwin.fsync(fd)
        #elseif canImport(Glibc)
        return Glibc.fsync(fd)
        #else
        return Musl.fsync(fd)
        #endif
    }

    /// Makes the entries of a directory durable (a rename or a new file in it): opens it and
    /// fsyncs it. Returns false when the directory could not be opened or synced.
    @discardableResult
    package static func syncDirectory(_ path: String) -> Bool {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return fsync(fd) == 0
    }

    /// `rename(2)`: replaces `to` atomically.
    package static func rename(_ from: String, _ to: String) -> Bool {
        #if canImport(Darwin)
        return Darwin.rename(from, to) == 0
        #elseif canImport(Glibc)
        return Glibc.rename(from, to) == 0
        #else
        return Musl.rename(from, to) == 0
        #endif
    }

    /// Renames `from` to `to` unless `to` exists, atomically (Linux `renameat2(RENAME_NOREPLACE)`,
    /// Apple `renamex_np(RENAME_EXCL)`). Returns 0, or the errno (`EEXIST` when taken;
    /// `EINVAL`/`ENOSYS`/`ENOTSUP` when the file system or the C library cannot).
    package static func renameNoReplace(_ from: String, _ to: String) -> Int32 {
        #if canImport(Darwin)
        return renamex_np(from, to, UInt32(RENAME_EXCL)) == 0 ? 0 : errno
        #elseif canImport(Glibc)
        // glibc declares renameat2 only under _GNU_SOURCE, which Swift's Glibc module does not see.
        guard let f = renameat2Function else { return ENOSYS }
        return f(AT_FDCWD, from, AT_FDCWD, to, 1 /* RENAME_NOREPLACE */) == 0 ? 0 : errno
        #else
        return ENOSYS
        #endif
    }

    /// Streams the file through `body` in 1 MiB pieces (pread into one reused buffer: unlike a map,
    /// the pages read do not stay in this process's resident set). Returns the bytes streamed, or
    /// nil when the file cannot be opened or read.
    package static func stream(_ path: String, from start: Int = 0, to end: Int = Int.max,
                               _ body: (UnsafeRawBufferPointer) -> Void) -> Int? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
        defer { buf.deallocate() }
        var at = start
        while at < end {
            let n = pread(fd, buf.baseAddress!, min(buf.count, end - at), off_t(at))
            if n < 0 { return nil }
            if n == 0 { break }
            body(UnsafeRawBufferPointer(rebasing: buf[0..<n]))
            at += n
        }
        return at - start
    }

    /// The file's size, or nil when it cannot be stat-ed.
    package static func size(_ path: String) -> Int? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return Int(st.st_size)
    }
}

#if canImport(Glibc)
private typealias RenameAt2 = @convention(c) (Int32, UnsafePointer<CChar>?, Int32, UnsafePointer<CChar>?, UInt32) -> Int32
private nonisolated(unsafe) let renameat2Function: RenameAt2? = {
    guard let symbol = dlsym(nil, "renameat2") else { return nil }
    return unsafeBitCast(symbol, to: RenameAt2.self)
}()
#endif
