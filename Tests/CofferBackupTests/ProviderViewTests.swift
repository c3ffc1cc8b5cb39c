import Foundation
import Testing
import GRDB
import Synchronization
@testable import CofferBackup
@testable import CofferCore
import CofferStorage

/// Forwards to a real storage and records every read, so a test can see what the provider sees.
final class RecordingStorage: Storage, @unchecked Sendable {
    let base: any Storage
    let reads = Mutex<[(name: String, range: Range<Int>?)]>([])
    init(_ base: any Storage) { self.base = base }
    var location: String { base.location }
    func put(_ name: String, data: Data) async throws(StorageError) { try await base.put(name, data: data) }
    func get(_ name: String, range: Range<Int>?) async throws(StorageError) -> Data {
        reads.withLock { $0.append((name, range)) }
        return try await base.get(name, range: range)
    }
    func stat(_ name: String) async throws(StorageError) -> ObjectInfo? { try await base.stat(name) }
    func list(prefix: String) async throws(StorageError) -> [ObjectInfo] { try await base.list(prefix: prefix) }
    func delete(_ name: String) async throws(StorageError) { try await base.delete(name) }
    func create(_ name: String, data: Data) async throws(StorageError) { try await base.create(name, data: data) }
}

/// Issue 6, "no observable blob lengths": what the storage provider sees of a backup.
@Suite struct ProviderViewTests {
    static func objects(_ storage: LocalStorage) async throws -> [String: Int] {
        var out: [String: Int] = [:]
        for o in try await storage.list(prefix: "") where o.name != "config" { out[o.name] = o.size }
        return out
    }

    static func addMessages(_ q: DatabaseQueue, from: Int, count: Int) async throws {
        try await q.write { db in
            for i in from..<(from + count) {
                try db.execute(sql: "INSERT INTO messages(body, ts) VALUES (?, ?)",
                               arguments: ["message \(i): see you at the station at \(i % 24):\(i % 60)", i])
            }
        }
    }

    static func copyTree(_ from: String, _ to: String) throws {
        try FileManager.default.copyItem(atPath: from, toPath: to)
    }

    /// The same backup run onto two identical repositories, one with a 10 KB photo received:
    /// the provider sees the same number of objects with the same sizes. Every stored object is a
    /// Padmé size of at least 1 MiB, and a run's blobs are spread over at least two packs.
    @Test func aSmallPhotoDoesNotShowInWhatTheProviderSees() async throws {
        let s = Scratch()
        let a = try await TestRepo.make(s)
        let src = s.path("src/app")
        try FileManager.default.createDirectory(atPath: src + "/Media", withIntermediateDirectories: true)
        let q = try DatabaseQueue(path: src + "/msgstore.db")
        try await q.write { db in
            try db.execute(sql: "CREATE TABLE messages(id INTEGER PRIMARY KEY, body TEXT NOT NULL, ts INTEGER NOT NULL)")
        }
        try await Self.addMessages(q, from: 0, count: 3000)
        write(randomBytes(300_000, seed: 1), to: src + "/Media/IMG-0001.jpg", mtime: Date().timeIntervalSince1970 - 1000)
        let first: BackupSummary = try await a.repo.backup(paths: [src])
        #expect(first.packsWritten >= 2, "blobs spread over at least two packs")

        // Day B starts from an exact copy of the repository and of the device state.
        try Self.copyTree(s.path("repo"), s.path("repo-b"))
        try Self.copyTree(s.path("home"), s.path("home-b"))
        let storageB = try LocalStorage(root: s.path("repo-b"), create: false)
        let repoB = try await Repository.open(storage: storageB, key: a.key,
                                              deviceStore: DeviceKeyStore(home: URL(fileURLWithPath: s.path("home-b"))))

        var sawPhoto = false
        for run in 0..<3 {
            try await Self.addMessages(q, from: 3000 + run * 40, count: 40)
            let beforeA = try await Self.objects(a.storage), beforeB = try await Self.objects(storageB)
            let ra: BackupSummary = try await a.repo.backup(paths: [src])
            let photo = src + "/Media/IMG-\(run)-received.jpg"
            if run == 1 { write(randomBytes(10_000, seed: 77), to: photo) }
            let rb: BackupSummary = try await repoB.backup(paths: [src])
            if run == 1 {
                #expect(rb.bytesNew >= 10_000 && rb.bytesNew > ra.bytesNew, "the photo was stored in B")
                try FileManager.default.removeItem(atPath: photo)
                sawPhoto = true
            }
            let newA = try await Self.objects(a.storage).filter { beforeA[$0.key] == nil }
            let newB = try await Self.objects(storageB).filter { beforeB[$0.key] == nil }
            #expect(newA.values.sorted() == newB.values.sorted(), "run \(run): sizes \(newA.values.sorted()) vs \(newB.values.sorted())")
            #expect(newA.count == 2 + 1 + 1, "two packs, an index, a snapshot")
            for size in Array(newA.values) + Array(newB.values) {
                #expect(size >= 1 << 20 && PaddingPolicy.padmeDefault.paddedLength(size) == size)
            }
        }
        #expect(sawPhoto)
        // Both repositories are whole: check passes and the photo day restores.
        #expect(try await repoB.check().isClean)
        #expect(try await a.repo.check().isClean)
    }

    /// Restore, check and backups read packs only whole or in 1 MiB-aligned ranges (the end clipped
    /// to the pack): the provider never sees where a blob starts or ends.
    @Test func readsAreWholeOrAligned() async throws {
        let s = Scratch()
        let t = try await TestRepo.make(s, options: RepositoryOptions(fileChunkSize: 256 << 10, targetPackSize: 2 << 20))
        let src = s.path("src/data")
        makeSampleTree(at: src, bigFileMB: 6)
        let dbDir = s.path("src/db")
        try FileManager.default.createDirectory(atPath: dbDir, withIntermediateDirectories: true)
        let q = try DatabaseQueue(path: dbDir + "/chat.db")
        try await q.write { db in
            try db.execute(sql: "CREATE TABLE messages(id INTEGER PRIMARY KEY, body TEXT NOT NULL, ts INTEGER NOT NULL)")
        }
        try await Self.addMessages(q, from: 0, count: 20_000)
        let _: BackupSummary = try await t.repo.backup(paths: [src, dbDir])
        try await Self.addMessages(q, from: 20_000, count: 200)
        let _: BackupSummary = try await t.repo.backup(paths: [src, dbDir])

        let recording = RecordingStorage(t.storage)
        let repo = try await Repository.open(storage: recording, key: t.key, deviceStore: t.device)
        let _: RestoreSummary = try await repo.restore(snapshot: "latest", target: URL(fileURLWithPath: s.path("out")))
        expectSameTree(src, s.path("out/data"), checkDirTimes: false)
        let restored = try DatabaseQueue(path: s.path("out/db/chat.db"))
        #expect(try await restored.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM messages") } == 20_200)
        #expect(try await repo.check(readData: true).isClean)
        let sizes = try await Self.objects(t.storage)
        let reads = recording.reads.withLock { $0 }
        var ranged = 0
        for r in reads where r.name.hasPrefix("data/") {
            guard let range = r.range else { continue }
            ranged += 1
            let size = sizes[r.name]!
            #expect(range.lowerBound % (1 << 20) == 0, "\(r.name) read from \(range.lowerBound)")
            #expect(range.upperBound % (1 << 20) == 0 || range.upperBound == size, "\(r.name) read to \(range.upperBound) of \(size)")
        }
        #expect(ranged > 0, "restore used ranged reads")
    }
}
