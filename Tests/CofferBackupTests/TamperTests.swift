import Foundation
import Testing
@testable import CofferBackup
import CofferCore
import CofferStorage

/// Each kind of damage is detected, names the object, and restore never writes wrong content.
@Suite struct TamperTests {
    struct Fixture {
        let s: Scratch
        let t: TestRepo
        let src: String
        let snapshotID: String
    }

    static func fixture() async throws -> Fixture {
        let s = Scratch()
        // Small packs so that files land in different packs.
        let t = try await TestRepo.make(s, options: RepositoryOptions(fileChunkSize: 256 << 10, targetPackSize: 1 << 20))
        let src = s.path("src/data")
        write(randomBytes(1_500_000, seed: 1), to: src + "/one.bin")
        write(randomBytes(1_500_000, seed: 2), to: src + "/two.bin")
        write(Data("small".utf8), to: src + "/dir/small.txt")
        let summary: BackupSummary = try await t.repo.backup(paths: [src])
        return Fixture(s: s, t: t, src: src, snapshotID: summary.snapshotID)
    }

    /// The pack of the file's first chunk, or of its first chunk stored outside `other` (blobs are
    /// spread at random over a run's packs, so two files' first chunks may share a pack).
    static func packOf(_ repo: Repository, file: String, other: ObjectID? = nil) async throws -> (ObjectID, BlobLocation) {
        let list = try await repo.engine.lookup(root: try await repo.engine.loadSnapshots()[0].1.root,
                                                components: Engine.components(file))
        let locs = list.0!.content.map { repo.engine.location(of: $0)! }
        let loc = locs.first { $0.pack != other }!
        return (loc.pack, loc)
    }

    static func objectPath(_ f: Fixture, _ name: String) -> String { f.s.path("repo/" + name) }

    @Test func flippedPackByteIsNamedAndTheFileIsNotWritten() async throws {
        let f = try await Self.fixture()
        let (pack, loc) = try await Self.packOf(f.t.repo, file: "data/one.bin")
        flipByte(Self.objectPath(f, pack.packName), at: loc.entry.offset + 100)
        let repo = try await f.t.reopen()
        let report = try await repo.check(readData: true)
        #expect(!report.isClean)
        #expect(report.problems.contains { $0.object == pack.packName && $0.kind == .damaged })
        #expect(report.problems.contains { $0.object == "blob \(loc.entry.id.hex)" })
        let out = f.s.path("out")
        let r: RestoreSummary = try await repo.restore(snapshot: "latest", target: URL(fileURLWithPath: out))
        #expect(r.failures.count == 1)
        #expect(r.failures.first?.path == "data/one.bin")
        #expect(r.failures.first?.object == pack.packName)
        #expect(r.failures.first?.code == .dataDamaged)
        #expect(!FileManager.default.fileExists(atPath: out + "/data/one.bin"))
        #expect(allFiles(under: out).allSatisfy { !$0.contains("coffer-restore") }, "no temporary file left")
        #expect(FileManager.default.contents(atPath: out + "/data/two.bin") == randomBytes(1_500_000, seed: 2))
    }

    @Test func truncatedAndSwappedPacksAreDetected() async throws {
        let f = try await Self.fixture()
        let (p1, _) = try await Self.packOf(f.t.repo, file: "data/one.bin")
        let (p2, _) = try await Self.packOf(f.t.repo, file: "data/two.bin", other: p1)
        #expect(p1 != p2)
        // Swap the two packs' contents.
        let a = FileManager.default.contents(atPath: Self.objectPath(f, p1.packName))!
        let b = FileManager.default.contents(atPath: Self.objectPath(f, p2.packName))!
        unlink(Self.objectPath(f, p1.packName)); unlink(Self.objectPath(f, p2.packName))
        FileManager.default.createFile(atPath: Self.objectPath(f, p1.packName), contents: b)
        FileManager.default.createFile(atPath: Self.objectPath(f, p2.packName), contents: a)
        let repo = try await f.t.reopen()
        let quick = try await repo.check(readData: false)
        #expect(quick.problems.contains { $0.object == p1.packName })
        #expect(quick.problems.contains { $0.object == p2.packName })
        let out = f.s.path("out")
        // Trees share packs with data (blobs are spread at random), so the swap may also have
        // damaged a directory listing the restore needs before any file: then the restore stops
        // with an error naming one of the two packs.
        let outcome: Result<RestoreSummary, BackupError>
        do { outcome = .success(try await repo.restore(snapshot: "latest", target: URL(fileURLWithPath: out))) } catch {
            outcome = .failure(error)
        }
        switch outcome {
        case .success(let r):
            let failed = r.failures.map(\.path)
            for file in ["data/one.bin", "data/two.bin"] {
                // Reported itself, or under a directory whose damaged listing stopped its restore.
                #expect(failed.contains { file == $0 || file.hasPrefix($0 + "/") }, "\(file) not reported: \(failed)")
                #expect(!FileManager.default.fileExists(atPath: out + "/" + file))
            }
            for path in failed {
                // A failed file is not there; a directory whose listing is damaged is there, empty.
                var isDir: ObjCBool = false
                if FileManager.default.fileExists(atPath: out + "/" + path, isDirectory: &isDir) {
                    let contents = (try? FileManager.default.contentsOfDirectory(atPath: out + "/" + path)) ?? ["?"]
                    #expect(isDir.boolValue && contents.isEmpty, "\(path)")
                }
            }
        case .failure(let error):
            #expect(error.code == .dataDamaged && [p1.packName, p2.packName].contains(error.object ?? ""), "\(error)")
            #expect(!FileManager.default.fileExists(atPath: out + "/data/one.bin"))
            #expect(!FileManager.default.fileExists(atPath: out + "/data/two.bin"))
        }
        #expect(allFiles(under: out).allSatisfy { !$0.contains("coffer-restore") })

        // Truncation.
        let f2 = try await Self.fixture()
        let (p3, _) = try await Self.packOf(f2.t.repo, file: "data/one.bin")
        let path = Self.objectPath(f2, p3.packName)
        let d = FileManager.default.contents(atPath: path)!
        unlink(path)
        FileManager.default.createFile(atPath: path, contents: d.prefix(d.count - 100))
        let repo2 = try await f2.t.reopen()
        let report = try await repo2.check(readData: true)
        #expect(report.problems.contains { $0.object == p3.packName && $0.kind == .damaged })
    }

    @Test func flippedIndexSnapshotAndTreeAreNamed() async throws {
        // Index object.
        let f = try await Self.fixture()
        let indexes = try await f.t.storage.list(prefix: "index/")
        #expect(indexes.count >= 1)
        flipByte(Self.objectPath(f, indexes[0].name), at: 60)
        let repo = try await f.t.reopen()
        let report = try await repo.check(readData: false)
        #expect(report.problems.contains { $0.object == indexes[0].name && $0.kind == .damaged })
        do {
            _ = try await repo.prune(mode: .singleWriterNow)
            Issue.record("prune ran with a damaged index")
        } catch {
            #expect(error.code == .dataDamaged)
            #expect(error.object == indexes[0].name)
        }

        // Snapshot object.
        let g = try await Self.fixture()
        let snapName = "snapshots/\(g.snapshotID)"
        flipByte(Self.objectPath(g, snapName), at: -5)
        let grepo = try await g.t.reopen()
        do {
            _ = try await grepo.snapshots()
            Issue.record("a damaged snapshot was listed")
        } catch {
            #expect(error.code == .dataDamaged)
            #expect(error.object == snapName)
        }
        let greport = try await grepo.check(readData: false)
        #expect(greport.problems.contains { $0.object == snapName })

        // Tree blob (the directory listing of data/dir): restore reports the files below it, writes none.
        let h = try await Self.fixture()
        let root = try await h.t.repo.engine.loadSnapshots()[0].1.root
        let (dirNode, _) = try await h.t.repo.engine.lookup(root: root, components: ["data", "dir"])
        let treeID = dirNode!.subtree!
        let loc = h.t.repo.engine.location(of: treeID)!
        flipByte(Self.objectPath(h, loc.pack.packName), at: loc.entry.offset + 3)
        let hrepo = try await h.t.reopen()
        let hreport = try await hrepo.check(readData: false)
        #expect(hreport.problems.contains { $0.object == loc.pack.packName && $0.detail.contains(treeID.hex) })
        let out = h.s.path("out")
        let r: RestoreSummary = try await hrepo.restore(snapshot: "latest", target: URL(fileURLWithPath: out))
        #expect(r.failures.contains { $0.path == "data/dir" && $0.object == loc.pack.packName })
        #expect(!FileManager.default.fileExists(atPath: out + "/data/dir/small.txt"))
    }

    @Test func droppedIndexIsReportedAndTheNextBackupHeals() async throws {
        let f = try await Self.fixture()
        for o in try await f.t.storage.list(prefix: "index/") { try await f.t.storage.delete(o.name) }
        let repo = try await f.t.reopen()
        let report = try await repo.check(readData: false)
        #expect(!report.isClean)
        #expect(report.problems.allSatisfy { $0.kind == .missing && $0.object.hasPrefix("blob ") })
        #expect(report.unindexedPacks.count >= 2)
        let out = f.s.path("out")
        do {
            _ = try await repo.restore(snapshot: "latest", target: URL(fileURLWithPath: out)) as RestoreSummary
            Issue.record("restored without an index")
        } catch {
            // The snapshot's blobs are in no index: the storage serves incomplete data, refused before writing.
            #expect(error.code == .staleRepository)
            #expect(((try? FileManager.default.contentsOfDirectory(atPath: out)) ?? []).isEmpty)
            #expect(error.object?.hasPrefix("blob ") == true)
        }
        // A backup adopts the unindexed packs from their authenticated headers instead of uploading again.
        let again: BackupSummary = try await repo.backup(paths: [f.src])
        #expect(again.bytesStored == 0)
        let healed = try await f.t.reopen().check(readData: true)
        #expect(healed.isClean, "\(healed.problems)")
    }
}
