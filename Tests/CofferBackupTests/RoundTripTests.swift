import Foundation
import Testing
@testable import CofferBackup
import CofferCore
import CofferStorage

@Suite struct RoundTripTests {
    @Test func backupAndRestoreGeneratedTree() async throws {
        let s = Scratch()
        let t = try await TestRepo.make(s, options: TestRepo.unpadded)
        let src = s.path("src/data")
        makeSampleTree(at: src)
        let summary: BackupSummary = try await t.repo.backup(paths: [src])
        #expect(!summary.isPartial)
        #expect(summary.filesNew == 6)
        #expect(summary.symlinks == 2)
        #expect(summary.bytesTotal == Int64((20 << 20) + 600_000 + 6 + 4))
        // The forwarded copy is deduplicated: stored bytes stay near the unique content.
        #expect(summary.bytesNew == Int64((20 << 20) + 300_000 + 6 + 4))
        #expect(summary.bytesStored < summary.bytesNew + 64 << 10)

        let list = try await t.repo.list(snapshot: "latest", path: "data", recursive: true)
        #expect(list.contains { $0.path == "data/d1/d2/d3/deep.txt" && $0.kind == .file && $0.size == 4 })
        #expect(list.contains { $0.path == "data/link-to-a" && $0.kind == .symlink && $0.linkTarget == "a.txt" })

        let out = s.path("out")
        let r: RestoreSummary = try await t.repo.restore(snapshot: summary.snapshotID, target: URL(fileURLWithPath: out))
        #expect(r.isComplete)
        #expect(r.filesRestored == 6)
        expectSameTree(src, out + "/data")

        // A fresh process (new Repository) sees the same.
        let again = try await t.reopen()
        let snaps = try await again.snapshots()
        #expect(snaps.count == 1 && snaps[0].id == summary.snapshotID && snaps[0].seq == 1 && snaps[0].prev == nil)
        let report = try await again.check(readData: true)
        #expect(report.isClean, "\(report.problems)")
        #expect(report.blobsVerified > 20)
        #expect(report.unindexedPacks.isEmpty)
    }

    /// Restore works pack by pack: a chunk repeated inside one file and across files is read and
    /// verified once and written to every offset; a file spread over many packs (out of file order
    /// after an edit) comes back whole; a damaged pack fails exactly the files that need it.
    @Test func packOrderedRestoreWritesSharedAndScatteredChunks() async throws {
        let s = Scratch()
        let t = try await TestRepo.make(s, options: RepositoryOptions(fileChunkSize: 64 << 10, targetPackSize: 1 << 20))
        let src = s.path("src/data")
        let a = randomBytes(64 << 10, seed: 1), b = randomBytes(64 << 10, seed: 2)
        var repeated = Data()
        for i in 0..<40 { repeated.append(i % 3 == 0 ? b : a) }  // two distinct chunks, 40 places
        write(repeated, to: src + "/repeated.bin")
        write(a + b + randomBytes(10_000, seed: 3), to: src + "/shares-chunks.bin")
        write(randomBytes(3 << 20, seed: 4), to: src + "/big.bin")
        _ = try await t.repo.backup(paths: [src]) as BackupSummary
        // Change the middle of big.bin: its chunks now live in two runs of packs.
        var big = try Data(contentsOf: URL(fileURLWithPath: src + "/big.bin"))
        big.replaceSubrange((1 << 20)..<((1 << 20) + 300_000), with: randomBytes(300_000, seed: 5))
        write(big, to: src + "/big.bin", mtime: Date().timeIntervalSince1970 - 60)
        let second: BackupSummary = try await t.repo.backup(paths: [src])

        let out = s.path("out")
        let r: RestoreSummary = try await t.repo.restore(snapshot: second.snapshotID, target: URL(fileURLWithPath: out))
        #expect(r.isComplete, "\(r.failures)")
        #expect(r.bytesRestored == Int64(repeated.count + 2 * (64 << 10) + 10_000 + big.count))
        expectSameTree(src, out + "/data")

        // Damage the pack holding the new middle of big.bin: only big.bin fails, nothing is left of it.
        let changed = try #require(t.repo.engine.location(of: t.repo.engine.keys.chunkID(of: big[(1 << 20)..<((1 << 20) + (64 << 10))])))
        flipByte(s.path("repo") + "/" + changed.pack.packName, at: changed.entry.offset + 5)
        let out2 = s.path("out2")
        let r2: RestoreSummary = try await t.repo.restore(snapshot: second.snapshotID, target: URL(fileURLWithPath: out2))
        #expect(r2.failures.map(\.path) == ["data/big.bin"], "\(r2.failures)")
        #expect(r2.failures.first?.object == changed.pack.packName)
        #expect(allFiles(under: out2).sorted() == ["data", "data/repeated.bin", "data/shares-chunks.bin"])
    }

    @Test func includeSubsetAndNonEmptyTarget() async throws {
        let s = Scratch()
        let t = try await TestRepo.make(s)
        let src = s.path("src/data")
        makeSampleTree(at: src, bigFileMB: 1)
        _ = try await t.repo.backup(paths: [src]) as BackupSummary
        let out = s.path("out")
        let r: RestoreSummary = try await t.repo.restore(snapshot: "latest", target: URL(fileURLWithPath: out),
                                                         options: RestoreOptions(include: ["data/d1"]))
        #expect(r.isComplete)
        #expect(allFiles(under: out) == ["data", "data/d1", "data/d1/d2", "data/d1/d2/d3", "data/d1/d2/d3/deep.txt"])
        await #expect(throws: BackupError.self) {
            _ = try await t.repo.restore(snapshot: "latest", target: URL(fileURLWithPath: out)) as RestoreSummary
        }
        do {
            _ = try await t.repo.restore(snapshot: "latest", target: URL(fileURLWithPath: out)) as RestoreSummary
        } catch {
            #expect(error.code == .targetNotEmpty)
        }
        let r2: RestoreSummary = try await t.repo.restore(snapshot: "latest", target: URL(fileURLWithPath: out),
                                                          options: RestoreOptions(overwrite: true))
        #expect(r2.isComplete)
        expectSameTree(src, out + "/data")
        do {
            _ = try await t.repo.list(snapshot: "latest", path: "data/nope")
            Issue.record("expected pathNotFound")
        } catch {
            #expect(error.code == .pathNotFound)
        }
    }

    @Test func incrementalSkipsUnchangedFilesAndDedups() async throws {
        let s = Scratch()
        let t = try await TestRepo.make(s, options: TestRepo.unpadded)
        let src = s.path("src/data")
        makeSampleTree(at: src, bigFileMB: 8)
        let first: BackupSummary = try await t.repo.backup(paths: [src])
        #expect(first.bytesRead > 8 << 20)

        // Nothing changed: nothing is read, nothing but metadata stored.
        let second: BackupSummary = try await t.repo.backup(paths: [src])
        #expect(second.parentID == first.snapshotID)
        #expect(second.filesSkippedByMetadata == 6)
        #expect(second.bytesRead == 0)
        #expect(second.bytesStored == 0)
        #expect(second.filesUnchanged == 6 && second.filesNew == 0 && second.filesChanged == 0)

        // One file changes: only it is read; a copy of existing content adds nothing.
        let old = Date().timeIntervalSince1970 - 1000
        write(Data("hello again\n".utf8), to: src + "/a.txt", mode: 0o600, mtime: old)
        write(randomBytes(8 << 20, seed: 42), to: src + "/copy-of-big.bin", mtime: old)
        let third: BackupSummary = try await t.repo.backup(paths: [src])
        #expect(third.filesChanged == 1)
        #expect(third.filesNew == 1)
        #expect(third.filesSkippedByMetadata == 5)
        #expect(third.bytesRead == Int64(12 + (8 << 20)))
        #expect(third.bytesNew == 12)
        #expect(third.bytesStored < 64 << 10)

        // A file modified within 2 s of the last scan is re-read even though size and times match the parent.
        let recent = s.path("src/data/recent.txt")
        write(Data("x".utf8), to: recent)
        let fourth: BackupSummary = try await t.repo.backup(paths: [src])
        let fifth: BackupSummary = try await t.repo.backup(paths: [src])
        #expect(fourth.filesNew == 1)
        #expect(fifth.bytesRead >= 1, "recent.txt must be read again")
        #expect(fifth.filesSkippedByMetadata == fifth.filesUnchanged - 1)

        let snaps = try await t.repo.snapshots()
        #expect(snaps.map(\.seq) == [1, 2, 3, 4, 5])
        #expect(snaps[1].prev == snaps[0].id)
        let out = s.path("out")
        _ = try await t.repo.restore(snapshot: third.snapshotID, target: URL(fileURLWithPath: out)) as RestoreSummary
        #expect(FileManager.default.contents(atPath: out + "/data/a.txt") == Data("hello again\n".utf8))
        #expect(FileManager.default.contents(atPath: out + "/data/copy-of-big.bin") == randomBytes(8 << 20, seed: 42))
    }

    @Test func wrongKeyAndDamagedConfigAreDistinct() async throws {
        let s = Scratch()
        let t = try await TestRepo.make(s)
        do {
            _ = try await Repository.open(storage: t.storage, key: BackupKey())
            Issue.record("a wrong key opened the repository")
        } catch {
            #expect(error.code == .wrongKey)
        }
        #expect(try await Repository.readRepositoryID(storage: t.storage) == t.repo.repositoryID)
        do {
            _ = try await Repository.initialize(storage: t.storage, key: BackupKey())
            Issue.record("initialize over an existing repository")
        } catch {
            #expect(error.code == .alreadyInitialized)
        }
        flipByte(s.path("repo/config"), at: 20)
        do {
            _ = try await Repository.open(storage: t.storage, key: t.key)
            Issue.record("a damaged config opened")
        } catch {
            #expect(error.code == .repositoryDamaged)
            #expect(error.object == "config")
        }
        let empty = try LocalStorage(root: s.path("empty"), create: true)
        do {
            _ = try await Repository.open(storage: empty, key: t.key)
            Issue.record("opened nothing")
        } catch {
            #expect(error.code == .notARepository)
        }
    }

    @Test func unreadableFileIsReportedAndTheRestIsBackedUp() async throws {
        let s = Scratch()
        let t = try await TestRepo.make(s)
        let src = s.path("src/data")
        makeSampleTree(at: src, bigFileMB: 1)
        // Looks like SQLite but is not a database: the capture fails, so the file cannot be backed up.
        var bogus = Data("SQLite format 3\0".utf8)
        bogus.append(randomBytes(8192, seed: 3))
        write(bogus, to: src + "/broken.db")
        var events: [BackupEvent] = []
        for try await e in t.repo.backup(paths: [src]) { events.append(e) }
        guard case .finished(let summary)? = events.last else { Issue.record("no summary"); return }
        #expect(summary.isPartial)
        #expect(summary.unreadable.map(\.path) == [src + "/broken.db"])
        #expect(events.contains { if case .unreadable(let u) = $0 { return u.path.hasSuffix("broken.db") } else { return false } })
        #expect(events.contains { if case .scanned = $0 { return true } else { return false } })
        let list = try await t.repo.list(snapshot: "latest", path: "data")
        #expect(!list.contains { $0.path.hasSuffix("broken.db") })
        #expect(list.contains { $0.path == "data/a.txt" })
    }
}
