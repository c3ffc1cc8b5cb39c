import Foundation
import Testing
@testable import CofferBackup

/// `Repository.diff`, the API behind `coffer diff`: what changed between two snapshots.
@Suite struct DiffTests {
    @Test("added, removed, modified and metadata-only changes, in path order, with content totals")
    func diffOfTwoSnapshots() async throws {
        let s = Scratch()
        let t = try await TestRepo.make(s, options: TestRepo.unpadded)
        let src = s.path("src/d")
        write(Data("same\n".utf8), to: src + "/same.txt")
        write(Data("old\n".utf8), to: src + "/edit.txt")
        write(randomBytes(50_000, seed: 1), to: src + "/gone.bin")
        write(Data("mode\n".utf8), to: src + "/mode.txt", mode: 0o644)
        let first: BackupSummary = try await t.repo.backup(paths: [src])

        write(Data("new content\n".utf8), to: src + "/edit.txt", mtime: Date().timeIntervalSince1970 + 5)
        try FileManager.default.removeItem(atPath: src + "/gone.bin")
        write(randomBytes(20_000, seed: 2), to: src + "/sub/added.bin")
        chmod(src + "/mode.txt", 0o600)
        let second: BackupSummary = try await t.repo.backup(paths: [src])

        let d = try await t.repo.diff(first.snapshotID, String(second.snapshotID.prefix(8)))
        #expect(d.from.id == first.snapshotID && d.to.id == second.snapshotID)
        let got = d.changes.map { "\($0.kind.rawValue) \($0.path) \($0.type.rawValue)" }
        #expect(got == ["M d/edit.txt file", "- d/gone.bin file", "U d/mode.txt file", "+ d/sub directory", "+ d/sub/added.bin file"],
                "\(got)")
        #expect(d.totals.filesAdded == 1 && d.totals.filesRemoved == 1 && d.totals.filesModified == 1)
        #expect(d.totals.directoriesAdded == 1 && d.totals.metadataChanged == 1)
        #expect(d.totals.bytesAdded == 20_000 + 12, "the new file and the edited file's new chunk")
        #expect(d.totals.bytesRemoved == 50_000 + 4)
        #expect(try await t.repo.diff("latest", "latest").changes.isEmpty)
    }

    @Test("stats: restore size, blobs, dedup ratio, and what only one snapshot stores")
    func statsOfSnapshotsAndRepository() async throws {
        let s = Scratch()
        let t = try await TestRepo.make(s, options: TestRepo.unpadded)
        let src = s.path("src/d")
        let shared = randomBytes(200_000, seed: 3)
        write(shared, to: src + "/a.bin")
        write(shared, to: src + "/copy-of-a.bin")
        let first: BackupSummary = try await t.repo.backup(paths: [src])
        write(randomBytes(30_000, seed: 4), to: src + "/b.bin")
        _ = try await t.repo.backup(paths: [src]) as BackupSummary

        let one = try await t.repo.stats(snapshot: first.snapshotID)
        #expect(one.snapshot?.id == first.snapshotID && one.snapshotsCount == 1)
        #expect(one.totalFileCount == 2 && one.restoreSize == 400_000)
        #expect(one.dedupRatio > 1.99 && one.dedupRatio < 2.01, "two copies of the same bytes: \(one.dedupRatio)")
        #expect(one.uniqueStoredSize ?? -1 > 0 && (one.uniqueStoredSize ?? .max) < 10_000,
                "only its root and folder listing are not shared with the second snapshot: \(String(describing: one.uniqueStoredSize))")
        let all = try await t.repo.stats()
        #expect(all.snapshot == nil && all.snapshotsCount == 2 && all.uniqueStoredSize == nil)
        #expect(all.totalFileCount == 5 && all.restoreSize == 830_000)
        #expect(all.uncompressedSize > 230_000 && all.blobCount > one.blobCount)
    }
}
