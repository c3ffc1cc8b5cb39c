import CofferPosix
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The package's one writer of small files that must survive a crash whole: device keys, vault
/// pending changes, anchored heads, realm key files and configurations.
public enum PrivateFile {
    /// Writes `data` to `url` atomically and durably, with permissions `mode` (0600 by default)
    /// from the first byte on, so a secret is never readable by others, not even for an instant.
    ///
    /// The guarantee: a temporary file in the same folder (created 0700 if missing) with `mode` set
    /// exactly (`fchmod`, whatever the umask), the bytes written and `fsync`ed (`F_FULLFSYNC` on Apple
    /// platforms, `Posix.fsync`), renamed over `url`,
    /// then the folder `fsync`ed so the rename itself survives a power loss. After a crash at any
    /// point `url` holds the old content or the new one, never a mix, and a returned call means the
    /// new content is on disk.
    /// - Throws: ``PrivateFileError`` naming the path (never the content).
    public static func save(_ data: Data, to url: URL, mode: mode_t = 0o600) throws(PrivateFileError) {
        let fm = FileManager.default
        let dir = url.deletingLastPathComponent()
        do {
            try fm.createDirectory(at: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw PrivateFileError(path: url.path, message: "cannot create the folder \(dir.path)")
        }
        let tmp = dir.appendingPathComponent(".\(url.lastPathComponent).\(UUID().uuidString).tmp")
        let fd = open(tmp.path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else { throw PrivateFileError(path: url.path, message: "cannot create \(url.path) (errno \(errno))") }
        var ok = false
        defer {
            close(fd)
            if !ok { unlink(tmp.path) }
        }
        // The umask may have cleared bits of `mode`; set it exactly.
        guard fchmod(fd, mode) == 0 else {
            throw PrivateFileError(path: url.path, message: "cannot set the permissions of \(url.path) (errno \(errno))")
        }
        let written = data.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard written == data.count, Posix.fsync(fd) == 0 else {
            throw PrivateFileError(path: url.path, message: "cannot write \(url.path) (errno \(errno))")
        }
        guard rename(tmp.path, url.path) == 0 else {
            throw PrivateFileError(path: url.path, message: "cannot move \(url.path) into place (errno \(errno))")
        }
        ok = true
        // Make the rename itself durable.
        Posix.syncDirectory(dir.path)
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
