import Foundation
import Testing
import GRDB
@testable import CofferBackup
import CofferCore
import CofferStorage

/// "Deleted messages stay deleted": with ``DatabaseCapture/compacted`` a row deleted before the
/// backup leaves no byte in the snapshot; with the default page copy it does (which shows that the
/// test can fail).
@Suite struct DeletedContentTests {
    static func makeChat(_ path: String, marker: String, wal: Bool) throws -> DatabaseQueue {
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        let q = try DatabaseQueue(path: path)
        if wal { _ = try q.writeWithoutTransaction { db in try String.fetchOne(db, sql: "PRAGMA journal_mode=WAL") } }
        try q.write { db in
            // Make sure SQLite does not zero deleted content by itself (some builds default to it).
            try db.execute(sql: "PRAGMA secure_delete=OFF")
            try db.execute(sql: "CREATE TABLE messages(id INTEGER PRIMARY KEY, chat INTEGER, body TEXT NOT NULL)")
            try db.execute(sql: "CREATE INDEX messages_chat ON messages(chat)")
            for i in 0..<3000 {
                try db.execute(sql: "INSERT INTO messages(chat, body) VALUES (?, ?)", arguments: [i % 7, "ordinary message \(i), see you at 8"])
            }
            try db.execute(sql: "INSERT INTO messages(chat, body) VALUES (3, ?)", arguments: [marker])
            for i in 0..<3000 {
                try db.execute(sql: "INSERT INTO messages(chat, body) VALUES (?, ?)", arguments: [i % 7, "later message \(i)"])
            }
        }
        try q.write { db in
            try db.execute(sql: "PRAGMA secure_delete=OFF")
            try db.execute(sql: "DELETE FROM messages WHERE body = ?", arguments: [marker])
        }
        return q
    }

    static func contains(_ data: Data, _ needle: String) -> Bool {
        data.range(of: Data(needle.utf8)) != nil
    }

    /// Backs up `src` into a fresh repository and returns (restored database bytes, every blob of
    /// the repository decrypted).
    static func backUp(_ s: Scratch, _ name: String, src: String, capture: DatabaseCapture) async throws -> (Data, [Data], BackupSummary) {
        let storage = try LocalStorage(root: s.path("repo-\(name)"), create: true)
        let repo = try await Repository.initialize(storage: storage, key: BackupKey(),
                                                   options: RepositoryOptions(targetPackSize: 1 << 20))
        var opts = BackupOptions()
        opts.databaseCapture = capture
        let summary: BackupSummary = try await repo.backup(paths: [src], options: opts)
        #expect(summary.databasesCaptured == 1)
        let out = s.path("out-\(name)")
        let r: RestoreSummary = try await repo.restore(snapshot: summary.snapshotID, target: URL(fileURLWithPath: out))
        #expect(r.isComplete)
        let db = try Data(contentsOf: URL(fileURLWithPath: out + "/app/chat.db"))
        // Every blob stored (data and trees): every pack read whole, every blob decrypted and verified.
        var blobs: [Data] = []
        let opener = BlobOpener(keys: repo.engine.keys)
        for info in try await storage.list(prefix: "data/") {
            let pack = try await storage.get(info.name)
            let header = try PackHeader(pack: pack, keys: repo.engine.keys)
            for e in header.entries { blobs.append(try opener.open(blob: e, inPack: pack, salt: header.salt)) }
        }
        #expect(blobs.count > 10)
        // The restored database is intact and the deleted row is gone from its rows.
        let q = try DatabaseQueue(path: out + "/app/chat.db")
        let (check, n) = try await q.read { db in
            (try String.fetchOne(db, sql: "PRAGMA integrity_check"), try Int.fetchOne(db, sql: "SELECT count(*) FROM messages"))
        }
        #expect(check == "ok")
        #expect(n == 6000)
        return (db, blobs, summary)
    }

    @Test(arguments: [false, true])
    func deletedRowLeavesNoBytesWithCompactedCapture(wal: Bool) async throws {
        let s = Scratch()
        let marker = "SECRET-DELETED-" + UUID().uuidString + "-MEET-AT-THE-DOCKS"
        let src = s.path("src/app")
        let q = try Self.makeChat(src + "/chat.db", marker: marker, wal: wal)
        if !wal {
            // The live file still holds the deleted text (in free space of its pages).
            #expect(Self.contains(try Data(contentsOf: URL(fileURLWithPath: src + "/chat.db")), marker))
        }

        let (plainDB, plainBlobs, _) = try await Self.backUp(s, "plain", src: src, capture: .pageCopy)
        #expect(Self.contains(plainDB, marker), "a page copy keeps deleted bytes (else this test could not fail)")
        #expect(plainBlobs.contains { Self.contains($0, marker) })

        let (db, blobs, _) = try await Self.backUp(s, "compacted", src: src, capture: .compacted)
        #expect(!Self.contains(db, marker), "the deleted message is not in the restored database")
        #expect(!blobs.contains { Self.contains($0, marker) }, "no stored blob holds the deleted message")
        try q.close()
    }

    /// `VACUUM INTO` is one read transaction: it finishes while the app commits every 10 ms.
    @Test func compactedCaptureFinishesUnderLiveWriter() async throws {
        let s = Scratch()
        let t = try await TestRepo.make(s)
        let src = s.path("src/app")
        try FileManager.default.createDirectory(atPath: src, withIntermediateDirectories: true)
        let pool = try DatabasePool(path: src + "/msgstore.db")
        try await pool.write { db in
            try db.execute(sql: "CREATE TABLE messages(id INTEGER PRIMARY KEY, body TEXT NOT NULL, ts INTEGER NOT NULL)")
            try db.execute(sql: "CREATE INDEX messages_ts ON messages(ts)")
            for i in 0..<20_000 {
                try db.execute(sql: "INSERT INTO messages(body, ts) VALUES (?, ?)", arguments: ["message number \(i) lol see you tomorrow", i])
            }
        }
        let flags = WriterFlags.start(pool, then: "DELETE FROM messages WHERE id = ?")
        defer { flags.stop.store(true, ordering: .relaxed) }
        while flags.commits.load(ordering: .relaxed) < 5 { try await Task.sleep(for: .milliseconds(10)) }
        var opts = BackupOptions()
        opts.databaseCapture = .compacted
        let captures = s.path("captures")  // this test's own: other tests capture at the same time
        try FileManager.default.createDirectory(atPath: captures, withIntermediateDirectories: true)
        opts.captureDirectory = captures
        let before = flags.commits.load(ordering: .relaxed)
        let first: BackupSummary = try await t.repo.backup(paths: [src], options: opts)
        let second: BackupSummary = try await t.repo.backup(paths: [src], options: opts)
        let after = flags.commits.load(ordering: .relaxed)
        flags.stop.store(true, ordering: .relaxed)
        #expect(after > before, "the app kept committing during the backups")
        #expect(first.databasesCaptured == 1 && second.databasesCaptured == 1)
        let out = s.path("out")
        let r: RestoreSummary = try await t.repo.restore(snapshot: second.snapshotID, target: URL(fileURLWithPath: out))
        #expect(r.isComplete)
        let restored = try DatabaseQueue(path: out + "/app/msgstore.db")
        let (check, count, freelist) = try await restored.read { db in
            (try String.fetchOne(db, sql: "PRAGMA integrity_check"), try Int.fetchOne(db, sql: "SELECT count(*) FROM messages"),
             try Int.fetchOne(db, sql: "PRAGMA freelist_count"))
        }
        #expect(check == "ok")
        #expect(count == 20_000, "each commit inserts one row and deletes one")
        #expect(freelist == 0, "a compacted capture has no freelist")
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: captures)
            .filter { $0.hasPrefix(SQLiteCapture.tempPrefix) }
        #expect(leftovers.isEmpty)
    }
}
