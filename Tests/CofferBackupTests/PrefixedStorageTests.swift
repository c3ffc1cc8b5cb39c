import Foundation
import Testing
import Synchronization
import Crypto
@testable import CofferBackup
import CofferStorage

/// A storage that records which `create` each call reached, over a real folder.
private final class CreateRecorder: Storage, @unchecked Sendable {
    let base: LocalStorage
    let calls = Mutex<[(name: String, sha256: [UInt8]?)]>([])
    init(_ base: LocalStorage) { self.base = base }
    var location: String { base.location }
    func put(_ name: String, data: Data) async throws(StorageError) { try await base.put(name, data: data) }
    func get(_ name: String, range: Range<Int>?) async throws(StorageError) -> Data { try await base.get(name, range: range) }
    func stat(_ name: String) async throws(StorageError) -> ObjectInfo? { try await base.stat(name) }
    func list(prefix: String) async throws(StorageError) -> [ObjectInfo] { try await base.list(prefix: prefix) }
    func delete(_ name: String) async throws(StorageError) { try await base.delete(name) }
    func create(_ name: String, data: Data) async throws(StorageError) {
        calls.withLock { $0.append((name, nil)) }
        try await base.create(name, data: data)
    }
    func create(_ name: String, data: Data, sha256: [UInt8]) async throws(StorageError) {
        calls.withLock { $0.append((name, sha256)) }
        try await base.create(name, data: data, sha256: sha256)
    }
}

/// A key-rotated repository lives under `gen/<id>/` through PrefixedStorage: the SHA-256 the engine
/// computed for a pack must reach the storage (S3 signs it) instead of being dropped.
@Suite struct PrefixedStorageTests {
    @Test func createForwardsTheKnownSHA256UnderThePrefix() async throws {
        let s = Scratch()
        let recorder = CreateRecorder(try LocalStorage(root: s.path("repo"), create: true))
        let view = PrefixedStorage(base: recorder, prefix: "gen/0123abcd/")
        let data = Data("pack bytes".utf8)
        let digest = Array(SHA256.hash(data: data))
        try await view.create("data/ab/abcdef", data: data, sha256: digest)
        try await view.create("index/0001", data: data)
        let calls = recorder.calls.withLock { $0 }
        #expect(calls.count == 2)
        #expect(calls.first?.name == "gen/0123abcd/data/ab/abcdef")
        #expect(calls.first?.sha256 == digest, "the digest was dropped on the way through the prefix")
        #expect(calls.last?.name == "gen/0123abcd/index/0001" && calls.last?.sha256 == nil)
        #expect(try await recorder.base.get("gen/0123abcd/data/ab/abcdef", range: nil) == data)
        // The view speaks of the engine's names.
        #expect(try await view.stat("data/ab/abcdef")?.name == "data/ab/abcdef")
    }
}
