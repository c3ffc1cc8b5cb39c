#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CofferPosix

/// A read-only memory map of a whole file (the index cache's run files). Pages are read on first
/// touch and stay reclaimable by the kernel (they are file-backed), so a 600 MB run costs only the
/// pages lookups touch.
final class MappedFile: @unchecked Sendable {
    let path: String
    let count: Int
    let base: UnsafeRawPointer?

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    init(path: String) throws(Failure) {
        self.path = path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw Failure(description: "cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw Failure(description: "cannot stat \(path): \(String(cString: strerror(errno)))") }
        count = Int(st.st_size)
        if count == 0 {
            base = nil
            return
        }
        let p = mmap(nil, count, PROT_READ, MAP_PRIVATE, fd, 0)
        guard let p, p != MAP_FAILED else {
            throw Failure(description: "cannot map \(path): \(String(cString: strerror(errno)))")
        }
        base = UnsafeRawPointer(p)
    }

    deinit {
        if let base { munmap(UnsafeMutableRawPointer(mutating: base), count) }
    }

    /// Drops the pages of `offset..<offset+n` from the resident set (they are read again from the
    /// file if touched): a merge streams through runs without keeping them resident.
    func release(_ offset: Int, _ n: Int) {
        guard let base else { return }
        let page = Int(getpagesize())
        let lo = (offset + page - 1) / page * page
        let hi = min(count, offset + n) / page * page
        guard hi > lo else { return }
        _ = madvise(UnsafeMutableRawPointer(mutating: base + lo), hi - lo, MADV_DONTNEED)
    }

    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }

    @inline(__always) func u32(_ offset: Int) -> UInt32 {
        UInt32(littleEndian: base!.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }

    @inline(__always) func u64(_ offset: Int) -> UInt64 {
        UInt64(littleEndian: base!.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
    }

    /// A big-endian word (ids are stored as their 32 bytes, compared as four big-endian words).
    @inline(__always) func be64(_ offset: Int) -> UInt64 {
        UInt64(bigEndian: base!.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
    }

    func slice(_ offset: Int, _ n: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: base! + offset, count: n)
    }
}

/// Sequential writing of a private (0600) file with a reused buffer, then fsync; positioned writes
/// for the sections computed last.
final class PrivateFileWriter {
    let path: String
    let fd: Int32
    private var buffer: [UInt8] = []
    private(set) var position = 0

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    init(path: String) throws(Failure) {
        self.path = path
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard fd >= 0 else { throw Failure(description: "cannot create \(path): \(String(cString: strerror(errno)))") }
        buffer.reserveCapacity(1 << 20)
    }

    deinit { close(fd) }

    func append(_ bytes: UnsafeRawBufferPointer) throws(Failure) {
        buffer.append(contentsOf: bytes)
        position += bytes.count
        if buffer.count >= 1 << 20 { try flush() }
    }

    func append(_ bytes: [UInt8]) throws(Failure) {
        buffer.append(contentsOf: bytes)
        position += bytes.count
        if buffer.count >= 1 << 20 { try flush() }
    }

    func flush() throws(Failure) {
        var done = 0
        let total = buffer.count
        let start = position - total
        while done < total {
            let n = buffer.withUnsafeBytes { pwrite(fd, $0.baseAddress! + done, total - done, off_t(start + done)) }
            guard n > 0 else { throw Failure(description: "cannot write \(path): \(String(cString: strerror(errno)))") }
            done += n
        }
        buffer.removeAll(keepingCapacity: true)
    }

    func write(_ bytes: [UInt8], at offset: Int) throws(Failure) {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress! + done, bytes.count - done, off_t(offset + done)) }
            guard n > 0 else { throw Failure(description: "cannot write \(path): \(String(cString: strerror(errno)))") }
            done += n
        }
    }

    func sync() throws(Failure) {
        try flush()
        guard Posix.fsync(fd) == 0 else { throw Failure(description: "cannot sync \(path): \(String(cString: strerror(errno)))") }
    }
}

