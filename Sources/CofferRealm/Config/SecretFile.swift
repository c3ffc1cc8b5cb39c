import CofferVault
import Foundation
import CofferCore

/// A realm file could not be read, parsed or written. Never contains key material.
public struct RealmFileError: Error, Sendable, CustomStringConvertible {
    public var path: String
    public var message: String
    public init(path: String, message: String) {
        self.path = path
        self.message = message
    }
    public var description: String { message }
}

/// Writes files atomically (temporary name, fsync, rename), created with the given mode from the
/// start so a secret is never readable by others, not even for an instant.
enum AtomicFile {
    static func write(_ bytes: [UInt8], to url: URL, mode: mode_t) throws {
        let fm = FileManager.default
        let dir = url.deletingLastPathComponent()
        try fm.createDirectory(at: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let tmp = dir.appendingPathComponent(".\(url.lastPathComponent).\(UUID().uuidString).tmp")
        let fd = open(tmp.path, O_WRONLY | O_CREAT | O_EXCL, mode)
        guard fd >= 0 else { throw RealmFileError(path: url.path, message: "cannot create \(url.path) (errno \(errno))") }
        var ok = false
        defer {
            close(fd)
            if !ok { unlink(tmp.path) }
        }
        // The umask may have cleared bits of `mode`; set it exactly.
        _ = fchmod(fd, mode)
        let written = bytes.withUnsafeBytes { Foundation.write(fd, $0.baseAddress, $0.count) }
        guard written == bytes.count, fsync(fd) == 0 else {
            throw RealmFileError(path: url.path, message: "cannot write \(url.path) (errno \(errno))")
        }
        guard rename(tmp.path, url.path) == 0 else {
            throw RealmFileError(path: url.path, message: "cannot move \(url.path) into place (errno \(errno))")
        }
        ok = true
    }

    /// Reads a file that must not be readable by group or others (a key file).
    static func readSecret(_ url: URL) throws -> Data {
        var st = stat()
        guard stat(url.path, &st) == 0 else {
            throw RealmFileError(path: url.path, message: "cannot read \(url.path): no such file (run `coffer realm init --dir` first?)")
        }
        if st.st_mode & 0o077 != 0 {
            throw RealmFileError(path: url.path, message: "\(url.path) is readable by others (mode \(String(st.st_mode & 0o777, radix: 8))); run `chmod 600 \(url.path)`")
        }
        do {
            return try Data(contentsOf: url)
        } catch {
            throw RealmFileError(path: url.path, message: "cannot read \(url.path)")
        }
    }
}

extension Data {
    /// Lowercase hex (the wire layer's encoding).
    var realmHex: String { [UInt8](self).hexString }

    init?(realmHex hex: String) {
        guard let bytes = [UInt8](hexString: hex) else { return nil }
        self.init(bytes)
    }
}
