import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The `lstat` fields the engine records, portable across Glibc and Darwin.
struct FileStat: Sendable, Hashable {
    enum Kind: Sendable { case regular, directory, symlink, other }
    var kind: Kind
    var mode: UInt32
    var uid: UInt32
    var gid: UInt32
    var size: Int64
    var mtimeSec: Int64
    var mtimeNsec: UInt32
    var ctimeSec: Int64
    var ctimeNsec: UInt32
    var inode: UInt64
    var device: UInt64
    /// A named pipe (kind `.other`).
    var isFIFO: Bool
    /// Hard link count.
    var links: UInt32
    /// 512-byte blocks allocated (what a sparse file saves).
    var blocks: Int64

    /// A socket or a device: nothing a backup can store.
    var isSpecial: Bool { kind == .other && !isFIFO }

    init(_ st: stat) {
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

    static func lstat(_ path: String) -> Result<FileStat, Errno> {
        var st = stat()
        #if canImport(Darwin)
        let rc = Darwin.lstat(path, &st)
        #else
        let rc = Glibc.lstat(path, &st)
        #endif
        return rc == 0 ? .success(FileStat(st)) : .failure(Errno(errno))
    }

    static func fstat(_ fd: Int32) -> Result<FileStat, Errno> {
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
    static func statFollowing(_ path: String) -> Result<FileStat, Errno> {
        var st = stat()
        let rc = fstatat(AT_FDCWD, path, &st, 0)
        return rc == 0 ? .success(FileStat(st)) : .failure(Errno(errno))
    }

    /// `fstatat(dirfd, name, AT_SYMLINK_NOFOLLOW)`.
    static func lstat(at dirfd: Int32, _ name: String) -> Result<FileStat, Errno> {
        var st = stat()
        let rc = fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW)
        return rc == 0 ? .success(FileStat(st)) : .failure(Errno(errno))
    }

    func apply(to node: inout TreeNode) {
        node.mode = mode
        node.uid = uid
        node.gid = gid
        node.mtimeSec = mtimeSec
        node.mtimeNsec = mtimeNsec
        node.ctimeSec = ctimeSec
        node.ctimeNsec = ctimeNsec
        node.inode = inode
        node.device = device
    }
}

/// An errno value with its message.
struct Errno: Error, Sendable, CustomStringConvertible {
    var code: Int32
    init(_ code: Int32) { self.code = code }
    var description: String { String(cString: strerror(code)) }
}

enum Posix {
    static func open(_ path: String, _ flags: Int32, _ mode: mode_t = 0) -> Int32 {
        #if canImport(Darwin)
        Darwin.open(path, flags, mode)
        #else
        Glibc.open(path, flags, mode)
        #endif
    }

    /// Reads exactly `count` bytes at `offset` unless the file ends first; returns how many were read.
    static func preadFully(_ fd: Int32, _ buf: UnsafeMutableRawPointer, count: Int, offset: Int64) throws(Errno) -> Int {
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

    static func writeFully(_ fd: Int32, _ buf: UnsafeRawBufferPointer) throws(Errno) {
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

    static func readlink(_ path: String) throws(Errno) -> [UInt8] {
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
    static func setTimes(_ path: String, sec: Int64, nsec: UInt32) -> Bool {
        setTimes(at: AT_FDCWD, path, sec: sec, nsec: nsec)
    }

    /// `utimensat(dirfd, name, AT_SYMLINK_NOFOLLOW)`: the entry itself, never what a symlink points to.
    static func setTimes(at dirfd: Int32, _ name: String, sec: Int64, nsec: UInt32) -> Bool {
        var ts = (timespec(tv_sec: time_t(sec), tv_nsec: Int(nsec)), timespec(tv_sec: time_t(sec), tv_nsec: Int(nsec)))
        return withUnsafePointer(to: &ts) { p in
            p.withMemoryRebound(to: timespec.self, capacity: 2) { utimensat(dirfd, name, $0, AT_SYMLINK_NOFOLLOW) == 0 }
        }
    }

    /// `openat` with `O_NOFOLLOW | O_CLOEXEC` added: a symlink as the last component fails (ELOOP)
    /// instead of being followed.
    static func openNoFollow(at dirfd: Int32, _ name: String, _ flags: Int32, _ mode: mode_t = 0) -> Int32 {
        openat(dirfd, name, flags | O_NOFOLLOW | O_CLOEXEC, mode)
    }

    /// A directory entry below `dirfd`, opened as a directory without following a symlink.
    static func openDirectory(at dirfd: Int32, _ name: String) -> Int32 {
        openNoFollow(at: dirfd, name, O_RDONLY | O_DIRECTORY)
    }

    /// True when this process may give files away (`chown` to the stored owner): only root.
    static var restoresOwners: Bool { geteuid() == 0 }

    /// The first offset at or after `offset` that holds data, where the file system can tell
    /// (`SEEK_DATA`); `nil` when unknown. Returns `Int64.max` when only a hole follows.
    static func nextData(_ fd: Int32, from offset: Int64) -> Int64? {
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

    static func setTimes(fd: Int32, sec: Int64, nsec: UInt32) -> Bool {
        var ts = (timespec(tv_sec: time_t(sec), tv_nsec: Int(nsec)), timespec(tv_sec: time_t(sec), tv_nsec: Int(nsec)))
        return withUnsafePointer(to: &ts) { p in
            p.withMemoryRebound(to: timespec.self, capacity: 2) { futimens(fd, $0) == 0 }
        }
    }

    /// A new private (0700) directory under the system temporary directory.
    static func makePrivateTempDirectory(prefix: String, in parent: String? = nil) throws(Errno) -> String {
        let base = parent ?? NSTemporaryDirectory()
        var template = Array((base.hasSuffix("/") ? base : base + "/").utf8CString.dropLast())
        template.append(contentsOf: Array("\(prefix)-XXXXXX".utf8CString))
        let ok = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) != nil }
        guard ok else { throw Errno(errno) }
        return String(cString: template)
    }

    static func absolute(_ path: String) -> String {
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

/// Gives memory the allocator keeps after `free` back to the system, where the C library can
/// (glibc's `malloc_trim`, looked up at run time; nothing elsewhere: Darwin's allocator returns
/// freed pages by itself). Called between a backup's phases: the data phase's buffers, freed in
/// the middle of glibc's heaps, otherwise stay resident through the trees and the snapshot.
enum FreedMemory {
    static func release() {
        #if canImport(Glibc)
        _ = mallocTrim?(0)
        #endif
    }

    #if canImport(Glibc)
    private typealias MallocTrim = @convention(c) (Int) -> Int32
    private static let mallocTrim: MallocTrim? = {
        guard let symbol = dlsym(nil, "malloc_trim") else { return nil }
        return unsafeBitCast(symbol, to: MallocTrim.self)
    }()
    #endif
}
