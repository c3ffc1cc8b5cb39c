#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CofferStorage

/// A view of a storage where every name is under `prefix` (a key-rotated generation lives under
/// `gen/<repository id>/`; docs/KEY-ROTATION.md). The engine sees the usual `data/`, `index/`,
/// `snapshots/`, ... names; errors and listings speak of the engine's names.
struct PrefixedStorage: Storage {
    let base: any Storage
    /// Ends with `/`.
    let prefix: String

    init(base: any Storage, prefix: String) {
        precondition(prefix.hasSuffix("/"))
        self.base = base
        self.prefix = prefix
    }

    var location: String { base.location }
    var retriesTransientFailures: Bool { base.retriesTransientFailures }

    private func strip(_ e: StorageError) -> StorageError {
        var e = e
        if let n = e.name, n.hasPrefix(prefix) { e.name = String(n.dropFirst(prefix.count)) }
        return e
    }

    func put(_ name: String, data: Data) async throws(StorageError) {
        do { try await base.put(prefix + name, data: data) } catch { throw strip(error) }
    }

    func get(_ name: String, range: Range<Int>?) async throws(StorageError) -> Data {
        do { return try await base.get(prefix + name, range: range) } catch { throw strip(error) }
    }

    func stat(_ name: String) async throws(StorageError) -> ObjectInfo? {
        do {
            guard var info = try await base.stat(prefix + name) else { return nil }
            info.name = name
            return info
        } catch { throw strip(error) }
    }

    func list(prefix p: String) async throws(StorageError) -> [ObjectInfo] {
        do {
            return try await base.list(prefix: prefix + p).compactMap { info in
                guard info.name.hasPrefix(prefix) else { return nil }
                var i = info
                i.name = String(info.name.dropFirst(prefix.count))
                return i
            }
        } catch { throw strip(error) }
    }

    func delete(_ name: String) async throws(StorageError) {
        do { try await base.delete(prefix + name) } catch { throw strip(error) }
    }

    func delete(_ names: [String]) async throws(StorageError) {
        do { try await base.delete(names.map { prefix + $0 }) } catch { throw strip(error) }
    }

    func create(_ name: String, data: Data) async throws(StorageError) {
        do { try await base.create(prefix + name, data: data) } catch { throw strip(error) }
    }

    /// Forwards the caller's SHA-256 so that a key-rotated repository on S3 does not hash every pack
    /// a second time (the protocol's default would drop it and call `create(_:data:)`).
    func create(_ name: String, data: Data, sha256: [UInt8]) async throws(StorageError) {
        do { try await base.create(prefix + name, data: data, sha256: sha256) } catch { throw strip(error) }
    }

    // Closing is the owner's business (the base storage is shared with the Repository).
    func close() async {}
}
