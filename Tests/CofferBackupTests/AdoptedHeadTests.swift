import Foundation
import Testing
@testable import CofferBackup
import CofferCore
import CofferStorage

/// Heads learnt outside the storage (the vault's anchored heads) through the library API.
@Suite struct AdoptedHeadTests {
    @Test("an adopted head newer than the repository, or naming a hidden snapshot, refuses every operation; an app without a device store is covered too")
    func adoptedHeads() async throws {
        let scratch = Scratch()
        let t = try await TestRepo.make(scratch)
        write(Data("one".utf8), to: scratch.path("src/a.txt"))
        _ = try await t.repo.backup(paths: [scratch.path("src")])
        write(Data("two".utf8), to: scratch.path("src/a.txt"))
        let second = try await t.repo.backup(paths: [scratch.path("src")])
        let info = try await t.repo.snapshot(matching: second.snapshotID)

        // A new app instance without a device store, on a copy that hides the newest snapshot.
        try FileManager.default.moveItem(atPath: scratch.path("repo/snapshots/\(info.id)"), toPath: scratch.path("hidden"))
        let fresh = try await Repository.open(storage: t.storage, key: t.key, deviceStore: nil)
        #expect(try await fresh.verifyHeads().map(\.seq) == [info.seq - 1])  // nothing known yet: the old copy looks fine
        let head = DeviceHead(repositoryID: fresh.repositoryID, writerID: info.writerID, seq: info.seq, snapshotID: info.id)
        try fresh.adoptHeads([head, DeviceHead(repositoryID: String(repeating: "0", count: 32), writerID: info.writerID, seq: 999, snapshotID: info.id)])
        do {
            try await fresh.verifyHeads(doing: "restore from this repository")
            Issue.record("a hidden snapshot was accepted")
        } catch {
            #expect(error.code == .staleRepository)
            #expect(error.message.contains("storage provider is serving old or incomplete data") && error.message.contains(info.shortID))
        }
        let target = URL(fileURLWithPath: scratch.path("out"))
        await #expect(throws: BackupError.self) { try await fresh.restore(snapshot: "latest", target: target) }
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: target.path)) ?? []).isEmpty)
        await #expect(throws: BackupError.self) { try await fresh.prune(mode: .singleWriterNow) }

        // Served again: accepted. Adopted into a device store, the head is kept for later runs.
        try FileManager.default.moveItem(atPath: scratch.path("hidden"), toPath: scratch.path("repo/snapshots/\(info.id)"))
        #expect(try await fresh.verifyHeads().map(\.id) == [info.id])
        let device = DeviceKeyStore(home: URL(fileURLWithPath: scratch.path("other-home")))
        let withStore = try await Repository.open(storage: t.storage, key: t.key, deviceStore: device)
        try withStore.adoptHeads([head])
        #expect(try device.heads.heads(repositoryID: withStore.repositoryID) == [head])
    }
}
