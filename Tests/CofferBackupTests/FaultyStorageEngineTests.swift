import Foundation
import Testing
@testable import CofferBackup
import CofferCore
import CofferStorage
import CofferTesting

/// The engine over CofferTesting's storages, the way an app's own tests would use them: lost
/// answers are retried safely, a full disk fails the backup and leaves the repository as it was,
/// a damaged read is named and never restored as data.
@Suite struct FaultyStorageEngineTests {
    static let options = RepositoryOptions(fileChunkSize: 1 << 20, targetPackSize: 1 << 20, padding: .none)

    static func open(_ storage: any Storage, key: BackupKey, _ s: Scratch) async throws -> Repository {
        try await Repository.open(storage: storage, key: key, deviceStore: DeviceKeyStore(home: URL(fileURLWithPath: s.path("home"))))
    }

    /// A new repository in memory: the storage, its key and the repository as created.
    static func create(_ s: Scratch) async throws -> (MemoryStorage, BackupKey, Repository) {
        let memory = MemoryStorage()
        let key = BackupKey()
        let repo = try await Repository.initialize(storage: memory, key: key, options: options,
                                                   deviceStore: DeviceKeyStore(home: URL(fileURLWithPath: s.path("home"))))
        return (memory, key, repo)
    }

    @Test("lost answers on pack uploads: the engine's retries find their own bytes; everything restores")
    func lostAnswersAreRetried() async throws {
        let s = Scratch()
        let (memory, key, _) = try await Self.create(s)
        let faulty = FaultInjectingStorage(memory)
        faulty.inject(.loseAnswer, on: .create, times: 2, where: { $0.hasPrefix("data/") })
        let repo = try await Self.open(faulty, key: key, s)
        let src = s.path("src/data")
        makeSampleTree(at: src, bigFileMB: 3)
        let summary: BackupSummary = try await repo.backup(paths: [src])
        #expect(faulty.faultsLeft == 0, "both faults were hit")
        #expect(faulty.calls(.create) >= 2 + memory.contents.keys.filter { $0.hasPrefix("data/") }.count)

        let out = s.path("out")
        let r: RestoreSummary = try await repo.restore(snapshot: summary.snapshotID, target: URL(fileURLWithPath: out))
        #expect(r.isComplete)
        expectSameTree(src, out + "/data")
        let report = try await repo.check(readData: true)
        #expect(report.isClean, "\(report.problems)")
    }

    @Test("no space for the index: the backup fails with the storage's code, and the next one succeeds on an intact repository")
    func fullDiskLeavesTheRepositoryIntact() async throws {
        let s = Scratch()
        let (memory, key, _) = try await Self.create(s)
        let faulty = FaultInjectingStorage(memory)
        let repo = try await Self.open(faulty, key: key, s)
        let src = s.path("src/data")
        makeSampleTree(at: src, bigFileMB: 2)
        faulty.inject(.fail(.noSpace), on: .create, times: 10, where: { $0.hasPrefix("index/") })
        faulty.inject(.fail(.noSpace), on: .put, times: 10, where: { $0.hasPrefix("index/") })
        do {
            _ = try await repo.backup(paths: [src]) as BackupSummary
            Issue.record("the backup succeeded without an index")
        } catch {
            #expect(error.code == .storage, "\(error)")
            #expect((error.underlying as? StorageError)?.code == .noSpace, "\(error)")
        }
        #expect(memory.contents.keys.allSatisfy { !$0.hasPrefix("snapshots/") }, "no snapshot names data without an index")

        // The disk has room again: the same repository backs up, checks clean and restores.
        let left = faulty.faultsLeft
        let clean = try await Self.open(memory, key: key, s)
        let summary: BackupSummary = try await clean.backup(paths: [src])
        let report = try await clean.check(readData: true)
        #expect(report.isClean, "\(report.problems)")
        let out = s.path("out")
        _ = try await clean.restore(snapshot: summary.snapshotID, target: URL(fileURLWithPath: out)) as RestoreSummary
        expectSameTree(src, out + "/data")
        #expect(left < 20, "the failing backup tried to write its index")
    }

    @Test("a pack read with a changed byte: restore names the damage and writes none of that pack's data")
    func corruptedReadIsDetected() async throws {
        let s = Scratch()
        let (memory, key, created) = try await Self.create(s)
        let src = s.path("src/data")
        write(randomBytes(400_000, seed: 9), to: src + "/only.bin")
        let summary: BackupSummary = try await created.backup(paths: [src])

        let faulty = FaultInjectingStorage(memory)
        faulty.inject(.corrupt(at: 100), on: .get, times: 100, where: { $0.hasPrefix("data/") })
        let repo = try await Self.open(faulty, key: key, s)
        let out = s.path("out")
        var damaged = false
        do {
            let r: RestoreSummary = try await repo.restore(snapshot: summary.snapshotID, target: URL(fileURLWithPath: out))
            damaged = !r.isComplete
        } catch {
            #expect(error.code == .dataDamaged || error.code == .dataMissing, "\(error)")
            damaged = true
        }
        #expect(damaged, "a corrupted pack read restored as if whole")
        let written = (try? Data(contentsOf: URL(fileURLWithPath: out + "/data/only.bin"))) ?? Data()
        #expect(written != randomBytes(400_000, seed: 9), "the damaged file must not come back as if intact")
        #expect(faulty.calls(.get) > 0)
        // The stored bytes were never touched: without the fault, everything restores.
        let again = s.path("again")
        _ = try await Self.open(memory, key: key, s).restore(snapshot: summary.snapshotID, target: URL(fileURLWithPath: again)) as RestoreSummary
        expectSameTree(src, again + "/data")
    }
}
