import CofferCore
import Foundation

/// The newest snapshot this device has seen of one writer in one repository.
public struct DeviceHead: Sendable, Hashable, Codable {
    /// 32 hex digits.
    public var repositoryID: String
    /// 32 hex digits.
    public var writerID: String
    public var seq: UInt64
    /// 64 hex digits: the snapshot object's name.
    public var snapshotID: String

    public init(repositoryID: String, writerID: String, seq: UInt64, snapshotID: String) {
        self.repositoryID = repositoryID
        self.writerID = writerID
        self.seq = seq
        self.snapshotID = snapshotID
    }
}

/// The heads a device remembers, per repository and writer, in `heads/<repositoryID>.json` under
/// the device store (0600). The engine refuses to back up onto, prune or restore from a repository
/// whose snapshots show an older head than recorded here (rollback by the provider, or a stale copy).
public struct HeadStore: Sendable {
    public let store: DeviceKeyStore

    public init(store: DeviceKeyStore) {
        self.store = store
    }

    public func fileURL(repositoryID: String) -> URL {
        store.home.appendingPathComponent("heads", isDirectory: true).appendingPathComponent("\(repositoryID).json")
    }

    /// Every head recorded for this repository (one per writer), empty when none.
    public func heads(repositoryID: String) throws -> [DeviceHead] {
        let url = fileURL(repositoryID: repositoryID)
        guard FileManager.default.fileExists(atPath: url.path) else { return [] }
        do {
            let data = try Data(contentsOf: url)
            return try JSONDecoder().decode([DeviceHead].self, from: data)
        } catch {
            throw KeyFileError(path: url.path, message: "cannot read the device's head file \(url.path): \(error)")
        }
    }

    /// Records `head` if it is newer (higher seq) than the one kept for its writer.
    public func record(_ head: DeviceHead) throws {
        var all = try heads(repositoryID: head.repositoryID)
        if let i = all.firstIndex(where: { $0.writerID == head.writerID }) {
            guard head.seq > all[i].seq else { return }
            all[i] = head
        } else {
            all.append(head)
        }
        all.sort { $0.writerID < $1.writerID }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data: Data
        do { data = try encoder.encode(all) } catch {
            throw KeyFileError(path: fileURL(repositoryID: head.repositoryID).path, message: "cannot encode heads: \(error)")
        }
        try DeviceKeyStore.writePrivateFile(data, to: fileURL(repositoryID: head.repositoryID))
    }
}

extension DeviceKeyStore {
    /// The head store kept beside the keys.
    public var heads: HeadStore { HeadStore(store: self) }

    /// This device's writer id (32 hex digits), created once at random in `writer-id` (0600).
    public func writerID() throws -> String {
        let url = home.appendingPathComponent("writer-id")
        if let text = try? String(contentsOf: url, encoding: .utf8) {
            let id = text.trimmingCharacters(in: .whitespacesAndNewlines)
            if id.count == 32, id.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) { return id }
            throw KeyFileError(path: url.path, message: "the writer id file \(url.path) is malformed; remove it to get a new writer id")
        }
        var bytes = [UInt8](repeating: 0, count: 16)
        var rng = SystemRandomNumberGenerator()
        for i in bytes.indices { bytes[i] = UInt8.random(in: 0...255, using: &rng) }
        let id = Hex.string(bytes)
        try Self.writePrivateFile(Data((id + "\n").utf8), to: url)
        return id
    }

    /// Writes `data` to `url` as a 0600 file: temporary name, fsync, rename, fsync the directory (0700).
    /// (The one writer is `CofferCore.PrivateFile`, shared with the vault's pending-change record.)
    public static func writePrivateFile(_ data: Data, to url: URL) throws {
        do { try PrivateFile.save(data, to: url) } catch { throw KeyFileError(path: error.path, message: error.message) }
    }
}
