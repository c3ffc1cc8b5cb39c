import Foundation
import CofferCore

/// The device's key store under `$COFFER_HOME` (default `~/.config/coffer`): one 0600 key file per
/// repository (`keys/<repositoryID>.key`, holding the 64-digit key) and the newest head seen per
/// repository (`heads/<repositoryID>.json`, kept by the engine).
public struct DeviceKeyStore: Sendable {
    public let home: URL

    /// `home` if given, else `$COFFER_HOME`, else `~/.config/coffer`.
    public init(home: URL? = nil) {
        if let home {
            self.home = home
        } else if let env = ProcessInfo.processInfo.environment["COFFER_HOME"], !env.isEmpty {
            self.home = URL(fileURLWithPath: env, isDirectory: true)
        } else {
            self.home = FileManager.default.homeDirectoryForCurrentUser
                .appendingPathComponent(".config/coffer", isDirectory: true)
        }
    }

    /// Where the key of repository `repositoryID` (lowercase hex) is kept.
    public func keyFileURL(repositoryID: String) -> URL {
        home.appendingPathComponent("keys", isDirectory: true).appendingPathComponent("\(repositoryID).key")
    }

    /// The key stored for this repository, or `nil` when the device has none.
    public func loadKey(repositoryID: String) throws -> BackupKey? {
        let url = keyFileURL(repositoryID: repositoryID)
        guard FileManager.default.fileExists(atPath: url.path) else { return nil }
        return try Self.readKeyFile(at: url)
    }

    /// Stores the key for this repository in a 0600 file (directory 0700), atomically.
    public func saveKey(_ key: BackupKey, repositoryID: String) throws {
        try Self.writeKeyFile(key, to: keyFileURL(repositoryID: repositoryID))
    }

    /// Reads a key file: the 64-digit key, optionally grouped, surrounding white space ignored.
    public static func readKeyFile(at url: URL) throws -> BackupKey {
        let text: String
        do {
            text = try String(contentsOf: url, encoding: .utf8)
        } catch {
            throw KeyFileError(path: url.path, message: "cannot read the key file \(url.path)")
        }
        do {
            return try BackupKey(digits: text.trimmingCharacters(in: .whitespacesAndNewlines))
        } catch {
            throw KeyFileError(path: url.path, message: "the key file \(url.path) does not hold a valid 64-digit key: \(error)")
        }
    }

    /// Writes `key` as its 64 digits to `url`: created 0600 under a temporary name, fsynced, renamed.
    public static func writeKeyFile(_ key: BackupKey, to url: URL) throws {
        try writePrivateFile(Data((key.digits + "\n").utf8), to: url)
    }
}

/// A key file could not be read or written. Never contains key material.
public struct KeyFileError: Error, Sendable, CustomStringConvertible {
    public var path: String
    public var message: String
    public var description: String { message }

    public init(path: String, message: String) {
        self.path = path
        self.message = message
    }
}
