#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CofferStorage
import Crypto
import Synchronization

/// A ``Storage`` in memory, for tests of code that embeds Coffer: every rule of the protocol
/// (object names, ranges, conditional create, idempotent delete, the SHA-256 of
/// `create(_:data:sha256:)` checked like S3 checks it) and nothing on disk. It passes
/// ``StorageConformance`` like the real backends. Not for production: it forgets everything when
/// released.
public final class MemoryStorage: Storage {
    private struct Object {
        var data: Data
        var modified: Date
    }

    private let objects = Mutex<[String: Object]>([:])
    public let location: String
    public let retriesTransientFailures: Bool

    /// - Parameters:
    ///   - location: what messages call it.
    ///   - retriesTransientFailures: what it tells the engine (a stand-in for a network backend
    ///     that retries by itself says `true`; see ``Storage/retriesTransientFailures``).
    public init(location: String = "memory:", retriesTransientFailures: Bool = false) {
        self.location = location
        self.retriesTransientFailures = retriesTransientFailures
    }

    /// Every object's bytes by name, for a test to inspect (what reached the storage).
    public var contents: [String: Data] { objects.withLock { $0.mapValues(\.data) } }

    /// Replaces an object's bytes without any check, as damage at rest or a malicious provider
    /// would (a test of what the engine detects). Returns `false` when there is no such object.
    @discardableResult
    public func tamper(_ name: String, _ change: (inout Data) -> Void) -> Bool {
        objects.withLock { all in
            guard var o = all[name] else { return false }
            change(&o.data)
            all[name] = o
            return true
        }
    }

    private func check(_ name: String) throws(StorageError) {
        guard ObjectName.isValid(name) else { throw StorageError.invalidName(name) }
    }

    public func put(_ name: String, data: Data) async throws(StorageError) {
        try check(name)
        objects.withLock { $0[name] = Object(data: data, modified: Date()) }
    }

    public func get(_ name: String, range: Range<Int>?) async throws(StorageError) -> Data {
        try check(name)
        guard let data = objects.withLock({ $0[name]?.data }) else { throw StorageError.notFound(name) }
        guard let range else { return data }
        guard range.lowerBound >= 0, range.upperBound <= data.count else {
            throw StorageError.rangeNotSatisfiable(name: name, size: data.count)
        }
        return Data(data[data.startIndex + range.lowerBound..<data.startIndex + range.upperBound])
    }

    public func stat(_ name: String) async throws(StorageError) -> ObjectInfo? {
        try check(name)
        return objects.withLock { all in
            all[name].map { ObjectInfo(name: name, size: $0.data.count, modified: $0.modified) }
        }
    }

    public func list(prefix: String) async throws(StorageError) -> [ObjectInfo] {
        objects.withLock { all in
            all.filter { $0.key.hasPrefix(prefix) }
                .map { ObjectInfo(name: $0.key, size: $0.value.data.count, modified: $0.value.modified) }
        }
    }

    public func delete(_ name: String) async throws(StorageError) {
        try check(name)
        _ = objects.withLock { $0.removeValue(forKey: name) }
    }

    public func delete(_ names: [String]) async throws(StorageError) {
        for name in names { try check(name) }
        objects.withLock { all in
            for name in names { all.removeValue(forKey: name) }
        }
    }

    public func create(_ name: String, data: Data) async throws(StorageError) {
        try check(name)
        let taken = objects.withLock { all -> Data? in
            if let existing = all[name] { return existing.data }
            all[name] = Object(data: data, modified: Date())
            return nil
        }
        if let taken, taken != data {
            throw StorageError(.alreadyExists, name: name, message: "object \(name) already exists with other content")
        }
    }

    public func create(_ name: String, data: Data, sha256: [UInt8]) async throws(StorageError) {
        guard Array(SHA256.hash(data: data)) == sha256 else {
            throw StorageError(.permanent, name: name,
                               message: "the SHA-256 given for \(name) does not match its bytes (S3 refuses such a write too)")
        }
        try await create(name, data: data)
    }

    public func close() async {}
}
