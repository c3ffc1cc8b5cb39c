#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CofferCore
import CofferStorage

/// The engine's one way to its storage: every read, listing, write and delete of the engine goes
/// through here. The methods that take `doing` turn a storage failure into a ``BackupError`` the
/// same way everywhere: a missing object is `.dataMissing`, anything else `.storage`, the object
/// named and the ``StorageError`` kept as `underlying`; the `raw` ones keep the ``StorageError``
/// for the few callers that decide by its code (a range past a pack's end is damage, a pack gone
/// since the listing is skipped). Creates are retried on transient failures only when the backend
/// has no retry layer of its own (``create(_:data:id:)``).
struct ObjectStore: Sendable {
    let storage: any Storage

    static func error(_ e: StorageError, doing what: String) -> BackupError {
        if e.code == .notFound {
            return BackupError(.dataMissing, object: e.name, message: "\(what): object \(e.name ?? "?") is missing", underlying: e)
        }
        return BackupError(.storage, object: e.name, message: "\(what): \(e.message)", underlying: e)
    }

    // MARK: Reads

    func get(_ name: String, range: Range<Int>? = nil, doing what: String) async throws(BackupError) -> Data {
        do { return try await storage.get(name, range: range) } catch { throw Self.error(error, doing: what) }
    }

    /// A read whose ``StorageError`` the caller inspects.
    func rawGet(_ name: String, range: Range<Int>? = nil) async throws(StorageError) -> Data {
        try await storage.get(name, range: range)
    }

    func stat(_ name: String, doing what: String) async throws(BackupError) -> ObjectInfo? {
        do { return try await storage.stat(name) } catch { throw Self.error(error, doing: what) }
    }

    /// A listing whose ``StorageError`` the caller inspects or ignores.
    func rawList(_ prefix: String) async throws(StorageError) -> [ObjectInfo] {
        try await storage.list(prefix: prefix)
    }

    func list(_ prefix: String) async throws(BackupError) -> [ObjectInfo] {
        do { return try await storage.list(prefix: prefix) } catch { throw Self.error(error, doing: "listing \(prefix)") }
    }

    // MARK: Writes

    /// An unconditional write (the objects that are replaced in place: a rotation's notes, the config).
    func put(_ name: String, data: Data, doing what: String) async throws(BackupError) {
        do { try await storage.put(name, data: data) } catch { throw Self.error(error, doing: what) }
    }

    /// A conditional create, once, whose ``StorageError`` the caller inspects (`.alreadyExists`).
    func rawCreate(_ name: String, data: Data) async throws(StorageError) {
        try await storage.create(name, data: data)
    }

    /// Attempts of a create on a backend without a retry layer of its own (a folder: EIO or a
    /// timeout on a network file system).
    static let localAttempts = 4

    /// Conditional create (`Storage.create`: S3 `If-None-Match: *`, a hard link locally), retried on
    /// transient failures only when the backend does not retry them itself
    /// (`Storage.retriesTransientFailures`: one retry layer, never two stacked). A retried upload
    /// resends identical bytes, and identical bytes already stored count as success. Every object
    /// the engine writes this way is named by the hash of its bytes, so a name that already holds
    /// *different* bytes is a damaged or forged object (or a SHA-256 collision): the error says so
    /// and nothing is overwritten.
    /// - Parameter id: the object id (SHA-256 of `data`) when the caller knows it: S3 then signs
    ///   with it instead of hashing the bytes again.
    func create(_ name: String, data: Data, id: ObjectID? = nil) async throws(BackupError) {
        let attempts = storage.retriesTransientFailures ? 1 : Self.localAttempts
        var attempt = 0
        while true {
            do {
                if let id {
                    try await storage.create(name, data: data, sha256: id.bytes)
                } else {
                    try await storage.create(name, data: data)
                }
                return
            } catch {
                if error.code == .alreadyExists {
                    throw BackupError(.dataDamaged, object: name,
                                      message: "\(name) already exists in the storage with different content. Objects are named by "
                                        + "the hash of their content, so the stored one is damaged or was put there by someone else "
                                        + "(the storage provider), or this is a hash collision. Nothing was overwritten; run "
                                        + "`coffer check --read-data` and do not trust this storage until it is explained",
                                      underlying: error)
                }
                attempt += 1
                if !error.isTransient || attempt >= attempts {
                    throw Self.error(error, doing: "uploading \(name)")
                }
                try? await Task.sleep(for: .milliseconds(200 << attempt))
            }
        }
    }

    // MARK: Deletes

    func delete(_ name: String, doing what: String) async throws(BackupError) {
        do { try await storage.delete(name) } catch { throw Self.error(error, doing: what) }
    }

    func delete(_ names: [String], doing what: String) async throws(BackupError) {
        do { try await storage.delete(names) } catch { throw Self.error(error, doing: what) }
    }

    /// A delete whose failure the caller ignores or inspects.
    func rawDelete(_ names: [String]) async throws(StorageError) {
        try await storage.delete(names)
    }
}
