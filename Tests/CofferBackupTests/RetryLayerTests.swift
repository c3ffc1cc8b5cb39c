import Foundation
import Testing
import Synchronization
@testable import CofferBackup
import CofferStorage

/// A folder whose `create` fails with a transient error a set number of times, counting calls,
/// and which says whether it retries by itself (as S3 and WebDAV do).
private final class FlakyCreates: Storage, @unchecked Sendable {
    let base: LocalStorage
    let retriesTransientFailures: Bool
    let failuresLeft: Mutex<Int>
    let calls = Mutex(0)
    init(_ base: LocalStorage, failures: Int, retriesItself: Bool) {
        self.base = base
        failuresLeft = Mutex(failures)
        retriesTransientFailures = retriesItself
    }
    var location: String { base.location }
    func put(_ name: String, data: Data) async throws(StorageError) { try await base.put(name, data: data) }
    func get(_ name: String, range: Range<Int>?) async throws(StorageError) -> Data { try await base.get(name, range: range) }
    func stat(_ name: String) async throws(StorageError) -> ObjectInfo? { try await base.stat(name) }
    func list(prefix: String) async throws(StorageError) -> [ObjectInfo] { try await base.list(prefix: prefix) }
    func delete(_ name: String) async throws(StorageError) { try await base.delete(name) }
    func create(_ name: String, data: Data) async throws(StorageError) {
        calls.withLock { $0 += 1 }
        let fail = failuresLeft.withLock { n in
            defer { n -= 1 }
            return n > 0
        }
        if fail { throw StorageError(.transient, name: name, message: "connection reset (injected)") }
        try await base.create(name, data: data)
    }
    func create(_ name: String, data: Data, sha256: [UInt8]) async throws(StorageError) {
        try await create(name, data: data)
    }
}

/// One retry layer, never two stacked: a backend that retries by itself (S3, WebDAV) gets exactly
/// one call per upload from the engine; a folder gets the engine's few retries.
@Suite struct RetryLayerTests {
    private func engine(over storage: FlakyCreates, _ t: TestRepo) async throws -> Engine {
        try await Repository.open(storage: storage, key: t.key, deviceStore: t.device).engine
    }

    @Test("a backend without its own retries: transient failures are retried, at most Engine.localAttempts calls")
    func engineRetriesAFolder() async throws {
        let scratch = Scratch()
        let t = try await TestRepo.make(scratch)
        let name = "data/aa/" + String(repeating: "aa", count: 32)

        let twice = FlakyCreates(t.storage, failures: 2, retriesItself: false)
        try await engine(over: twice, t).createWithRetry(name, data: Data("bytes".utf8))
        #expect(twice.calls.withLock { $0 } == 3, "two transient failures, then the write")
        #expect(try await t.storage.get(name) == Data("bytes".utf8))

        let always = FlakyCreates(t.storage, failures: 100, retriesItself: false)
        await #expect(throws: BackupError.self) {
            try await engine(over: always, t).createWithRetry(name + "b", data: Data("other".utf8))
        }
        #expect(always.calls.withLock { $0 } == Engine.localAttempts)
    }

    @Test("a backend that retries by itself gets one call: the engine adds no second layer, also through a key rotation's prefix")
    func noStackedRetries() async throws {
        let scratch = Scratch()
        let t = try await TestRepo.make(scratch)
        let name = "data/bb/" + String(repeating: "bb", count: 32)
        let network = FlakyCreates(t.storage, failures: 1, retriesItself: true)
        await #expect(throws: BackupError.self) {
            try await engine(over: network, t).createWithRetry(name, data: Data("bytes".utf8))
        }
        #expect(network.calls.withLock { $0 } == 1, "the engine retried a backend that retries by itself")
        #expect(try await t.storage.stat(name) == nil)

        #expect(PrefixedStorage(base: network, prefix: "gen/01/").retriesTransientFailures)
        #expect(!PrefixedStorage(base: t.storage, prefix: "gen/01/").retriesTransientFailures)
    }
}
