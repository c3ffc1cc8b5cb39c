import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes small secret files (device keys, vault pending changes) durably and privately.
public enum PrivateFile {
    /// Writes `data` to `url` as a 0600 file: temporary name, fsync, rename, fsync the directory
    /// (created 0700). Either the old content or the new one is at `url` after a crash, never a mix.
    /// - Throws: ``PrivateFileError`` naming the path (never the content).
    public static func save(_ data: Data, to url: URL) throws(PrivateFileError) {
        let fm = FileManager.default
        let dir = url.deletingLastPathComponent()
        do {
            try fm.createDirectory(at: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw PrivateFileError(path: url.path, message: "cannot create the folder \(dir.path)")
        }
        let tmp = dir.appendingPathComponent(".\(url.lastPathComponent).\(UUID().uuidString).tmp")
        let fd = open(tmp.path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard fd >= 0 else { throw PrivateFileError(path: url.path, message: "cannot create \(url.path) (errno \(errno))") }
        var ok = false
        defer {
            close(fd)
            if !ok { unlink(tmp.path) }
        }
        let written = data.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard written == data.count, fsync(fd) == 0 else {
            throw PrivateFileError(path: url.path, message: "cannot write \(url.path) (errno \(errno))")
        }
        guard rename(tmp.path, url.path) == 0 else {
            throw PrivateFileError(path: url.path, message: "cannot move \(url.path) into place (errno \(errno))")
        }
        ok = true
        // Make the rename itself durable.
        let dirfd = open(dir.path, O_RDONLY)
        if dirfd >= 0 {
            _ = fsync(dirfd)
            close(dirfd)
        }
    }
}

/// A private file could not be written; the message names the path, never the content.
public struct PrivateFileError: Error, Sendable, CustomStringConvertible {
    public var path: String
    public var message: String
    public init(path: String, message: String) {
        self.path = path
        self.message = message
    }
    public var description: String { message }
}
