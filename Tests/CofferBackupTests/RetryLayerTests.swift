import Foundation
import Testing
import Synchronization
@testable import CofferBackup
import CofferStorage
import CofferTesting

/// One retry layer, never two stacked: a backend that retries by itself (S3, WebDAV) gets exactly
/// one call per upload from the engine; a folder gets the engine's few retries.
@Suite struct RetryLayerTests {
    /// A folder whose creates fail `failures` times with a transient error, saying whether it
    /// retries by itself (as S3 and WebDAV do).
    private func flaky(_ t: TestRepo, failures: Int, retriesItself: Bool) -> FaultInjectingStorage {
        let s = FaultInjectingStorage(t.storage, retriesTransientFailures: retriesItself)
        s.inject(.fail(.transient), on: .create, times: failures)
        return s
    }

    private func engine(over storage: FaultInjectingStorage, _ t: TestRepo) async throws -> Engine {
        try await Repository.open(storage: storage, key: t.key, deviceStore: t.device).engine
    }

    @Test("a backend without its own retries: transient failures are retried, at most ObjectStore.localAttempts calls")
    func engineRetriesAFolder() async throws {
        let scratch = Scratch()
        let t = try await TestRepo.make(scratch)
        let name = "data/aa/" + String(repeating: "aa", count: 32)

        let twice = flaky(t, failures: 2, retriesItself: false)
        try await engine(over: twice, t).objects.create(name, data: Data("bytes".utf8))
        #expect(twice.calls(.create) == 3, "two transient failures, then the write")
        #expect(try await t.storage.get(name) == Data("bytes".utf8))

        let always = flaky(t, failures: 100, retriesItself: false)
        await #expect(throws: BackupError.self) {
            try await engine(over: always, t).objects.create(name + "b", data: Data("other".utf8))
        }
        #expect(always.calls(.create) == ObjectStore.localAttempts)
    }

    @Test("a backend that retries by itself gets one call: the engine adds no second layer, also through a key rotation's prefix")
    func noStackedRetries() async throws {
        let scratch = Scratch()
        let t = try await TestRepo.make(scratch)
        let name = "data/bb/" + String(repeating: "bb", count: 32)
        let network = flaky(t, failures: 1, retriesItself: true)
        await #expect(throws: BackupError.self) {
            try await engine(over: network, t).objects.create(name, data: Data("bytes".utf8))
        }
        #expect(network.calls(.create) == 1, "the engine retried a backend that retries by itself")
        #expect(try await t.storage.stat(name) == nil)

        #expect(PrefixedStorage(base: network, prefix: "gen/01/").retriesTransientFailures)
        #expect(!PrefixedStorage(base: t.storage, prefix: "gen/01/").retriesTransientFailures)
    }
}
