import CofferStorage
import CofferTesting
import Crypto
import Foundation
import Testing

/// The CofferTesting product holds to the storage protocol itself, and its faults happen exactly
/// as armed (a test double that misbehaves differently from what it says tests nothing).
@Suite("CofferTesting: MemoryStorage and FaultInjectingStorage")
struct CofferTestingTests {
    @Test("MemoryStorage passes the storage conformance suite")
    func memoryConforms() async throws {
        try await StorageConformance(storage: MemoryStorage()).runAll()
    }

    @Test("FaultInjectingStorage with nothing armed passes it too, and counts every call")
    func wrapperConforms() async throws {
        let storage = FaultInjectingStorage(MemoryStorage())
        try await StorageConformance(storage: storage).runAll()
        #expect(storage.calls(.put) > 1100 && storage.calls(.create) > 5 && storage.calls(.get) > 50)
    }

    @Test("MemoryStorage checks a given SHA-256 the way S3 does, and tamper changes bytes behind the protocol")
    func digestAndTamper() async throws {
        let storage = MemoryStorage()
        let data = Data("pack".utf8)
        await #expect(throws: StorageError.self) {
            try await storage.create("data/aa/bb", data: data, sha256: Array(SHA256.hash(data: Data("other".utf8))))
        }
        #expect(storage.contents.isEmpty, "a write with a wrong digest stores nothing")
        try await storage.create("data/aa/bb", data: data, sha256: Array(SHA256.hash(data: data)))
        #expect(storage.tamper("data/aa/bb") { $0[0] ^= 1 })
        #expect(try await storage.get("data/aa/bb") != data)
        #expect(!storage.tamper("data/aa/missing") { _ in })
    }

    @Test("fail: nothing reaches the storage; loseAnswer: the write happens, the caller hears a transient error")
    func failAndLoseAnswer() async throws {
        let memory = MemoryStorage()
        let storage = FaultInjectingStorage(memory)
        storage.inject(.fail(.noSpace), on: .put, where: { $0.hasPrefix("index/") })
        storage.inject(.loseAnswer, on: .create, times: 2)

        try await storage.put("snapshots/s1", data: Data([1]))   // not matched: goes through
        await #expect(throws: StorageError.self) { try await storage.put("index/i1", data: Data([2])) }
        #expect(memory.contents["index/i1"] == nil, "a failed call wrote nothing")
        try await storage.put("index/i1", data: Data([2]))       // used up: goes through

        for attempt in 1...2 {
            do {
                try await storage.create("keys/k1", data: Data([3]))
                Issue.record("attempt \(attempt): the lost answer was not reported")
            } catch {
                #expect(error.isTransient && error.code == .transient)
            }
        }
        #expect(memory.contents["keys/k1"] == Data([3]), "the write behind a lost answer happened")
        try await storage.create("keys/k1", data: Data([3]))   // the retry finds its own bytes
        #expect(storage.calls(.create) == 3 && storage.calls(.put) == 3)
        #expect(storage.faultsLeft == 0)
    }

    @Test("truncate and corrupt change what a read returns, once, and leave the stored bytes alone")
    func damagedReads() async throws {
        let memory = MemoryStorage()
        let storage = FaultInjectingStorage(memory)
        let data = StorageConformance.randomData(100)
        try await storage.put("data/cc/x", data: data)
        storage.inject(.truncate(to: 10), on: .get)
        storage.inject(.corrupt(at: -1), on: .get)
        #expect(try await storage.get("data/cc/x") == data.prefix(10))
        let corrupted = try await storage.get("data/cc/x")
        #expect(corrupted.count == 100 && corrupted.prefix(99) == data.prefix(99) && corrupted.last != data.last)
        #expect(try await storage.get("data/cc/x") == data)
        #expect(memory.contents["data/cc/x"] == data)
    }

    @Test("retriesTransientFailures: forwarded from the base unless set")
    func retryFlag() {
        #expect(FaultInjectingStorage(MemoryStorage(retriesTransientFailures: true)).retriesTransientFailures)
        #expect(!FaultInjectingStorage(MemoryStorage()).retriesTransientFailures)
        #expect(!FaultInjectingStorage(MemoryStorage(retriesTransientFailures: true), retriesTransientFailures: false).retriesTransientFailures)
    }
}
