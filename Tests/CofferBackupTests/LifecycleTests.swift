import Foundation
import Testing
import Synchronization
@testable import CofferBackup
import CofferCore
import CofferStorage

@Suite struct LifecycleTests {
    /// A backup stopped part-way leaves its uploaded packs indexed by checkpoints; the next run
    /// does not upload them again, and earlier snapshots stay whole.
    @Test func interruptedBackupResumesWithoutUploadingAgain() async throws {
        let s = Scratch()
        let t0 = try await TestRepo.make(s, options: RepositoryOptions(fileChunkSize: 1 << 20, targetPackSize: 1 << 20))
        // A backend that holds the 7th pack upload until the test lets it go: the backup is
        // cancelled while it is certainly running, whatever the machine's speed.
        let gate = UploadGate(holdAfter: 6)
        let gated = GatedStorage(base: t0.storage, gate: gate)
        let t = TestRepo(scratch: s, storage: t0.storage, key: t0.key,
                         repo: try await Repository.open(storage: gated, key: t0.key, deviceStore: t0.device), device: t0.device)
        let src = s.path("src/data")
        write(Data("first".utf8), to: src + "/first.txt")
        let base: BackupSummary = try await t.repo.backup(paths: [src])
        for i in 0..<24 { write(randomBytes(1 << 20, seed: UInt64(100 + i)), to: src + "/file\(i).bin") }
        gate.arm()

        var options = BackupOptions()
        options.checkpointBytes = 1 << 20
        options.uploadConcurrency = 1
        let stored = Mutex<Int64>(0)
        let repo0 = t.repo
        let run = Task {
            try await repo0.backup(paths: [src], options: options) { e in
                if case .progress(let p) = e { stored.withLock { $0 = max($0, p.bytesStored) } }
            }
        }
        await gate.waitUntilHolding()
        run.cancel()
        gate.open()
        let outcome = await run.result
        #expect(throws: BackupError.self, "the cancelled backup ends with an error, not a snapshot") { try outcome.get() }
        if case .failure(let e as BackupError) = outcome { #expect(e.code == .cancelled, "\(e)") }
        let storedAtStop = stored.withLock { $0 }
        #expect(storedAtStop >= 6 << 20, "six packs were uploaded before the cancel")
        let afterStop = try await t.repo.snapshots()
        #expect(afterStop.count == 1, "the interrupted backup wrote no snapshot: \(afterStop.map(\.id))")
        let indexes = try await t.storage.list(prefix: "index/")
        #expect(indexes.count >= 3, "checkpoints were written")

        let repo = try await t.reopen()
        let check = try await repo.check(readData: false)
        #expect(check.isClean, "\(check.problems)")
        let resumed: BackupSummary = try await repo.backup(paths: [src])
        #expect(resumed.bytesNew <= Int64(24 << 20) - storedAtStop + (1 << 20))
        #expect(resumed.bytesStored < Int64(24 << 20) - storedAtStop + (2 << 20))
        let out = s.path("out")
        let r: RestoreSummary = try await repo.restore(snapshot: resumed.snapshotID, target: URL(fileURLWithPath: out))
        #expect(r.isComplete && r.filesRestored == 25)
        let r0: RestoreSummary = try await repo.restore(snapshot: base.snapshotID, target: URL(fileURLWithPath: s.path("out0")))
        #expect(r0.isComplete && r0.filesRestored == 1)
        #expect(try await repo.check(readData: true).isClean)
    }

    /// Prune keeps every blob of every live snapshot; two-phase prune deletes nothing before the
    /// grace period (storage time) has passed; single-writer prune frees space at once.
    @Test func pruneKeepsWhatLiveSnapshotsNeed() async throws {
        let s = Scratch()
        let t = try await TestRepo.make(s, options: RepositoryOptions(fileChunkSize: 256 << 10, targetPackSize: 1 << 20))
        let src = s.path("src/data")
        let old = Date().timeIntervalSince1970 - 1000
        write(randomBytes(3 << 20, seed: 1), to: src + "/gone.bin", mtime: old)
        write(randomBytes(2 << 20, seed: 2), to: src + "/kept.bin", mtime: old)
        write(Data("x".utf8), to: src + "/small.txt", mtime: old)
        _ = try await t.repo.backup(paths: [src]) as BackupSummary
        unlink(src + "/gone.bin")
        write(randomBytes(1 << 20, seed: 3), to: src + "/new.bin", mtime: old)
        let second: BackupSummary = try await t.repo.backup(paths: [src])

        let forgotten = try await t.repo.forget(policy: ForgetPolicy(keepLast: 1))
        #expect(forgotten.removed.count == 1 && forgotten.kept.map(\.id) == [second.snapshotID])
        let sizeBefore = try await t.storage.list(prefix: "data/").reduce(0) { $0 + $1.size }
        let indexBefore = try await t.storage.list(prefix: "index/")

        // Two-phase, long grace: marks only; what goes at once is the superseded index objects
        // (counted in bytesFreed since issue 12: they were deleted but reported as 0 B).
        let marked = try await t.repo.prune(mode: .twoPhase(grace: .seconds(3600)))
        #expect(marked.objectsMarked > 0)
        let indexAfter = Set(try await t.storage.list(prefix: "index/").map(\.name))
        #expect(marked.bytesFreed == Int64(indexBefore.filter { !indexAfter.contains($0.name) }.reduce(0) { $0 + $1.size }))
        #expect(try await t.storage.list(prefix: "data/").reduce(0) { $0 + $1.size } >= sizeBefore)
        #expect(try await t.storage.list(prefix: "marks/").count == 1)
        #expect(try await t.reopen().check(readData: true).isClean)
        // A backup now must not depend on marked packs: re-adding the gone file uploads it again.
        write(randomBytes(3 << 20, seed: 1), to: src + "/gone.bin", mtime: old)
        let third: BackupSummary = try await t.reopen().backup(paths: [src])
        #expect(third.bytesNew >= 3 << 20)
        unlink(src + "/gone.bin")

        // Grace zero: phase two runs.
        let repo = try await t.reopen()
        let pruned = try await repo.prune(mode: .twoPhase(grace: .zero))
        #expect(pruned.objectsDeleted > 0)
        #expect(pruned.bytesFreed > 0)
        let report = try await repo.check(readData: true)
        #expect(report.isClean, "\(report.problems)")
        #expect(report.unindexedPacks.isEmpty)
        for id in [second.snapshotID, third.snapshotID] {
            let out = s.path("out-\(id.prefix(6))")
            let r: RestoreSummary = try await repo.restore(snapshot: id, target: URL(fileURLWithPath: out))
            #expect(r.isComplete)
            #expect(FileManager.default.contents(atPath: out + "/data/kept.bin") == randomBytes(2 << 20, seed: 2))
        }

        // Single writer: a backup without gone.bin, forget the older ones, free the space at once.
        _ = try await repo.backup(paths: [src]) as BackupSummary
        _ = try await repo.forget(policy: ForgetPolicy(keepLast: 1))
        let now = try await repo.prune(mode: .singleWriterNow)
        #expect(now.bytesFreed >= 3 << 20)
        #expect(try await t.storage.list(prefix: "marks/").isEmpty)
        let final = try await t.reopen().check(readData: true)
        #expect(final.isClean, "\(final.problems)")
        let out = s.path("out-final")
        let r: RestoreSummary = try await t.reopen().restore(snapshot: "latest", target: URL(fileURLWithPath: out))
        #expect(r.isComplete && r.filesRestored == 3)
    }

    /// Two writers: B opened the repository before A's prune marked a pack, then backs up content
    /// that only that pack holds. B's commit check finds the pack marked and copies the blobs into
    /// a new pack before its snapshot (so phase two has nothing to rescue and deletes the marked
    /// pack); before the commit check existed, phase two rescued the pack instead.
    @Test func pruneRescuesMarkedPackThatANewerSnapshotNeeds() async throws {
        let s = Scratch()
        let a = try await TestRepo.make(s, options: RepositoryOptions(fileChunkSize: 256 << 10, targetPackSize: 1 << 20))
        let srcA = s.path("a/data")
        let old = Date().timeIntervalSince1970 - 1000
        write(randomBytes(2 << 20, seed: 77), to: srcA + "/x.bin", mtime: old)
        write(Data("a".utf8), to: srcA + "/keep.txt", mtime: old)
        _ = try await a.repo.backup(paths: [srcA]) as BackupSummary
        unlink(srcA + "/x.bin")
        _ = try await a.repo.backup(paths: [srcA]) as BackupSummary
        _ = try await a.repo.forget(policy: ForgetPolicy(keepLast: 1))

        // Device B opens now: its index still lists x.bin's pack.
        let deviceB = DeviceKeyStore(home: URL(fileURLWithPath: s.path("homeB")))
        let b = try await Repository.open(storage: a.storage, key: a.key, deviceStore: deviceB)

        let marked = try await a.repo.prune(mode: .twoPhase(grace: .seconds(3600)))
        #expect(marked.objectsMarked > 0)

        // B backs up x.bin's content: deduplicated against the (now marked) pack it still knows.
        let srcB = s.path("b/other")
        write(randomBytes(2 << 20, seed: 77), to: srcB + "/x-copy.bin", mtime: old)
        let bs: BackupSummary = try await b.backup(paths: [srcB])
        #expect(bs.bytesNew == 0, "B deduplicated against the marked pack")
        #expect(bs.blobsUploadedAgain == 8, "B copied x.bin's 8 blobs out of the marked pack before committing")

        // Phase two: B's snapshot finds its blobs in B's new pack; the marked pack goes.
        let repo = try await a.reopen()
        let pruned = try await repo.prune(mode: .twoPhase(grace: .zero))
        #expect(pruned.packsRescued == 0)
        #expect(pruned.objectsDeleted > 0)
        let report = try await a.reopen().check(readData: true)
        #expect(report.isClean, "\(report.problems)")
        let out = s.path("outB")
        let r: RestoreSummary = try await a.reopen().restore(snapshot: bs.snapshotID, target: URL(fileURLWithPath: out))
        #expect(r.isComplete)
        #expect(FileManager.default.contents(atPath: out + "/other/x-copy.bin") == randomBytes(2 << 20, seed: 77))
    }

    /// The device refuses an older head than it has seen: a rolled-back copy of the repository.
    @Test func staleHeadIsRefused() async throws {
        let s = Scratch()
        let t = try await TestRepo.make(s)
        let src = s.path("src/data")
        write(Data("v1".utf8), to: src + "/f.txt")
        _ = try await t.repo.backup(paths: [src]) as BackupSummary
        // The provider keeps a copy of the repository as it is now...
        try FileManager.default.copyItem(atPath: s.path("repo"), toPath: s.path("repo-old"))
        write(Data("v2".utf8), to: src + "/f.txt")
        _ = try await t.repo.backup(paths: [src]) as BackupSummary
        // ...and later serves it instead of the current one.
        let oldStorage = try LocalStorage(root: s.path("repo-old"))
        let stale = try await Repository.open(storage: oldStorage, key: t.key, deviceStore: t.device)
        for op in ["backup", "restore", "prune", "forget"] {
            do {
                switch op {
                case "backup": _ = try await stale.backup(paths: [src]) as BackupSummary
                case "restore": _ = try await stale.restore(snapshot: "latest", target: URL(fileURLWithPath: s.path("out"))) as RestoreSummary
                case "prune": _ = try await stale.prune(mode: .singleWriterNow)
                default: _ = try await stale.forget(policy: ForgetPolicy(keepLast: 1))
                }
                Issue.record("\(op) accepted a stale repository")
            } catch {
                #expect(error.code == .staleRepository, "\(op): \(error)")
            }
        }
        // A device that never saw the newer head (another home) has no reason to refuse.
        let other = DeviceKeyStore(home: URL(fileURLWithPath: s.path("home2")))
        let fresh = try await Repository.open(storage: oldStorage, key: t.key, deviceStore: other)
        let r: RestoreSummary = try await fresh.restore(snapshot: "latest", target: URL(fileURLWithPath: s.path("out2")))
        #expect(r.isComplete)
        // The current repository is accepted.
        _ = try await t.reopen().backup(paths: [src]) as BackupSummary
    }
}

/// LocalStorage whose puts of packs take a while, like a remote backend.
/// Holds pack uploads after the first `holdAfter` (once armed) until ``open()``.
final class UploadGate: Sendable {
    private struct State {
        var armed = false
        var passed = 0
        var open = false
        var held: [CheckedContinuation<Void, Never>] = []
        var holdingWaiters: [CheckedContinuation<Void, Never>] = []
    }
    private let state = Mutex(State())
    let holdAfter: Int
    init(holdAfter: Int) { self.holdAfter = holdAfter }

    func arm() { state.withLock { $0.armed = true } }

    func pass() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let (go, wake) = state.withLock { s -> (Bool, [CheckedContinuation<Void, Never>]) in
                guard s.armed, !s.open else { return (true, []) }
                s.passed += 1
                if s.passed <= holdAfter { return (true, []) }
                s.held.append(c)
                let w = s.holdingWaiters
                s.holdingWaiters = []
                return (false, w)
            }
            for w in wake { w.resume() }
            if go { c.resume() }
        }
    }

    /// Returns once an upload is being held.
    func waitUntilHolding() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if !s.held.isEmpty { return true }
                s.holdingWaiters.append(c)
                return false
            }
            if now { c.resume() }
        }
    }

    func open() {
        let held = state.withLock { s in
            s.open = true
            let h = s.held
            s.held = []
            return h
        }
        for c in held { c.resume() }
    }
}

struct GatedStorage: Storage {
    let base: LocalStorage
    let gate: UploadGate
    var location: String { base.location }
    func put(_ name: String, data: Data) async throws(StorageError) { try await base.put(name, data: data) }
    func create(_ name: String, data: Data) async throws(StorageError) {
        if name.hasPrefix("data/") { await gate.pass() }
        try await base.create(name, data: data)
    }
    func get(_ name: String, range: Range<Int>?) async throws(StorageError) -> Data { try await base.get(name, range: range) }
    func stat(_ name: String) async throws(StorageError) -> ObjectInfo? { try await base.stat(name) }
    func list(prefix: String) async throws(StorageError) -> [ObjectInfo] { try await base.list(prefix: prefix) }
    func delete(_ name: String) async throws(StorageError) { try await base.delete(name) }
    func delete(_ names: [String]) async throws(StorageError) { try await base.delete(names) }
}
