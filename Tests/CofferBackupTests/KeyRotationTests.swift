import Foundation
import Testing
import GRDB
@testable import CofferBackup
import CofferCore
import CofferStorage

/// `coffer key rotate` in the library: a new key and id, every live snapshot re-encrypted and
/// restorable, the old key refused with a clear message, nothing of the old generation left.
@Suite struct KeyRotationTests {
    /// Three states of a source tree, each backed up; one snapshot forgotten; returns copies of the
    /// kept states by snapshot id.
    static func populate(_ t: TestRepo) async throws -> [String: String] {
        let s = t.scratch
        let src = s.path("src/app")
        makeSampleTree(at: src, bigFileMB: 3)
        let q = try DatabaseQueue(path: src + "/chat.db")
        try await q.write { db in
            try db.execute(sql: "CREATE TABLE m(id INTEGER PRIMARY KEY, body TEXT)")
            for i in 0..<4000 { try db.execute(sql: "INSERT INTO m(body) VALUES (?)", arguments: ["message \(i)"]) }
        }
        try q.close()
        var states: [String: String] = [:]
        for round in 0..<3 {
            if round > 0 {
                write(randomBytes(200_000 + round, seed: UInt64(100 + round)), to: src + "/media/new-\(round).jpg", mtime: Date().timeIntervalSince1970 - 600)
                let q = try DatabaseQueue(path: src + "/chat.db")
                try await q.write { db in try db.execute(sql: "UPDATE m SET body = 'edited \(round)' WHERE id % 97 = 0") }
                try q.close()
            }
            let summary: BackupSummary = try await t.repo.backup(paths: [src])
            let copy = s.path("state-\(round)")
            let r: RestoreSummary = try await t.repo.restore(snapshot: summary.snapshotID, target: URL(fileURLWithPath: copy))
            #expect(r.isComplete)
            states[summary.snapshotID] = copy
        }
        // A forgotten snapshot: its successor's prev names an object that no longer exists.
        let first = try await t.repo.snapshots()[0].id
        _ = try await t.repo.forget(policy: ForgetPolicy(keepLast: 2))
        states[first] = nil
        return states
    }

    /// Restores every snapshot of `repo` and compares it with the state it was made from
    /// (matched by writer and seq, which rotation keeps).
    static func expectAllRestore(_ repo: Repository, before: [SnapshotInfo], states: [String: String], scratch: Scratch, tag: String) async throws {
        let after = try await repo.snapshots()
        #expect(after.count == before.count)
        for (i, info) in after.enumerated() {
            let old = try #require(before.first { $0.writerID == info.writerID && $0.seq == info.seq })
            #expect(info.id != old.id, "a rewritten snapshot has a new id")
            #expect(info.time == old.time && info.paths == old.paths)
            let out = scratch.path("restored-\(tag)-\(i)")
            let r: RestoreSummary = try await repo.restore(snapshot: info.id, target: URL(fileURLWithPath: out))
            #expect(r.isComplete)
            expectSameTree(try #require(states[old.id]), out)
        }
    }

    @Test func rotateTwiceKeepsEverySnapshotAndRetiresTheOldKeys() async throws {
        let s = Scratch()
        let t = try await TestRepo.make(s)
        let states = try await Self.populate(t)
        let before = try await t.repo.snapshots()
        let oldID = t.repo.repositoryID

        let report = try await KeyRotation.rotate(storage: t.storage, key: t.key, deviceStore: t.device)
        #expect(report.oldRepositoryID == oldID && report.newRepositoryID != oldID)
        #expect(report.snapshots == 2 && report.blobsWritten > 0 && !report.resumed)
        #expect(report.oldObjectsDeleted > 0)
        #expect(report.newKey.digits != t.key.digits)

        // The device keeps the new key only; the root config is the new generation.
        #expect(try t.device.loadKey(repositoryID: report.newRepositoryID)?.digits == report.newKey.digits)
        #expect(try t.device.loadKey(repositoryID: oldID) == nil)
        #expect(try await Repository.readRepositoryID(storage: t.storage) == report.newRepositoryID)

        // The old key is refused, saying it was replaced.
        do {
            _ = try await Repository.open(storage: t.storage, key: t.key, deviceStore: nil)
            Issue.record("the old key still opens the repository")
        } catch {
            #expect(error.code == .keyReplaced, "a replaced key has its own code: \(error.code)")
            #expect(error.message.contains("replaced by a key rotation"))
        }
        // A random key gets the plain wrong-key message.
        do {
            _ = try await Repository.open(storage: t.storage, key: BackupKey(), deviceStore: nil)
            Issue.record("a random key opens the repository")
        } catch {
            #expect(error.code == .wrongKey && !error.message.contains("replaced"))
        }

        let repo = try await Repository.open(storage: t.storage, key: report.newKey, deviceStore: t.device)
        try await Self.expectAllRestore(repo, before: before, states: states, scratch: s, tag: "1")
        let check = try await repo.check(readData: true)
        #expect(check.isClean, "\(check.problems)")
        #expect(check.unindexedPacks.isEmpty)

        // Nothing of the old generation is left: only config, the new generation, the note for the old key.
        let names = try await t.storage.list(prefix: "").map(\.name)
        let prefix = "gen/\(report.newRepositoryID)/"
        #expect(names.allSatisfy { $0 == "config" || $0.hasPrefix(prefix) || $0 == "retired/\(oldID)" }, "\(names.filter { !$0.hasPrefix(prefix) })")

        // A backup after the rotation lands in the new generation and dedups against it.
        let more: BackupSummary = try await repo.backup(paths: [s.path("src/app")])
        #expect(more.bytesNew == 0 || more.bytesNew < 200_000)

        // Rotating a rotated repository: the prefixed generation is replaced in turn.
        let second = try await KeyRotation.rotate(storage: t.storage, key: report.newKey, deviceStore: t.device)
        let repo2 = try await Repository.open(storage: t.storage, key: second.newKey, deviceStore: t.device)
        #expect(try await repo2.snapshots().count == 3)
        #expect(try await repo2.check(readData: true).isClean)
        let names2 = try await t.storage.list(prefix: "").map(\.name)
        #expect(!names2.contains { $0.hasPrefix(prefix) }, "the first rotated generation is gone")
        for k in [t.key, report.newKey] {
            await #expect(throws: BackupError.self) { _ = try await Repository.open(storage: t.storage, key: k, deviceStore: nil) }
        }
    }

    /// The crash window between a vault registration of K' and the commit: the old key still opens
    /// the repository, and the new key (what the vault would hand out) opens it too by rolling the
    /// commit forward. A failure before the commit loses nothing and a later run resumes.
    @Test func failureBeforeCommitLosesNothingAndNewKeyRollsForward() async throws {
        let s = Scratch()
        let t = try await TestRepo.make(s)
        let states = try await Self.populate(t)
        let before = try await t.repo.snapshots()
        struct Refused: Error {}
        let captured = CapturedKey()
        await #expect(throws: Refused.self) {
            _ = try await KeyRotation.rotate(storage: t.storage, key: t.key, deviceStore: t.device) { key, id in
                captured.set(key, id)
                throw Refused()
            }
        }
        let (newKey, newID) = try #require(captured.get())
        // Not committed: the old key opens, the device still has it, the job is pending.
        let old = try await Repository.open(storage: t.storage, key: t.key, deviceStore: t.device)
        #expect(old.repositoryID == t.repo.repositoryID)
        #expect(KeyRotation.isUnfinished(repositoryID: old.repositoryID, deviceStore: t.device))
        #expect(KeyRotation.pendingNewKey(repositoryID: old.repositoryID, deviceStore: t.device)?.digits == newKey.digits)

        // The new key opens it on "another device" (no device store): the staged commit rolls forward.
        let rolled = try await Repository.open(storage: t.storage, key: newKey, deviceStore: nil)
        #expect(rolled.repositoryID == newID)
        try await Self.expectAllRestore(rolled, before: before, states: states, scratch: s, tag: "rf")

        // The rotating device re-runs: clean-up only, with the new key its key file now names.
        let key = try #require(try t.device.loadKey(repositoryID: newID))
        let report = try await KeyRotation.rotate(storage: t.storage, key: key, deviceStore: t.device)
        #expect(report.resumed && report.newRepositoryID == newID && report.oldObjectsDeleted > 0)
        #expect(!KeyRotation.isUnfinished(repositoryID: t.repo.repositoryID, deviceStore: t.device))
        #expect(try t.device.loadKey(repositoryID: t.repo.repositoryID) == nil)
        let repo = try await Repository.open(storage: t.storage, key: newKey, deviceStore: t.device)
        #expect(try await repo.check(readData: true).isClean)
    }
}

final class CapturedKey: @unchecked Sendable {
    private let lock = NSLock()
    private var value: (BackupKey, String)?
    func set(_ k: BackupKey, _ id: String) { lock.withLock { value = (k, id) } }
    func get() -> (BackupKey, String)? { lock.withLock { value } }
}
