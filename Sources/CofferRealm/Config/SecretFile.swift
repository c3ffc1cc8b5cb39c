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

/// The realm's files: written through the package's one atomic writer (`PrivateFile`: mode set
/// from the start, fsync, rename, fsync of the folder), read with a permission check for secrets.
enum AtomicFile {
    static func write(_ bytes: [UInt8], to url: URL, mode: mode_t) throws {
        do {
            try PrivateFile.save(Data(bytes), to: url, mode: mode)
        } catch {
            throw RealmFileError(path: error.path, message: error.message)
        }
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
