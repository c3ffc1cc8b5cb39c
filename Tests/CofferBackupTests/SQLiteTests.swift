import Foundation
import Testing
import GRDB
import Synchronization
@testable import CofferBackup
import CofferCore
import CofferStorage

@Suite struct SQLiteTests {
    /// A WAL database committing every 10 ms in another thread throughout the backup: the capture
    /// finishes, the restored copy passes integrity_check, and no -wal/-shm file is stored.
    @Test func liveWALDatabaseIsCapturedConsistently() async throws {
        let s = Scratch()
        let t = try await TestRepo.make(s)
        let src = s.path("src/app")
        try FileManager.default.createDirectory(atPath: src + "/Databases", withIntermediateDirectories: true)
        let dbPath = src + "/Databases/msgstore.db"
        let pool = try DatabasePool(path: dbPath)
        try await pool.write { db in
            try db.execute(sql: "CREATE TABLE messages(id INTEGER PRIMARY KEY, body TEXT NOT NULL, ts INTEGER NOT NULL)")
            try db.execute(sql: "CREATE INDEX messages_ts ON messages(ts)")
            for i in 0..<20_000 {
                try db.execute(sql: "INSERT INTO messages(body, ts) VALUES (?, ?)", arguments: ["message number \(i) lol see you tomorrow", i])
            }
        }
        write(randomBytes(2 << 20, seed: 9), to: src + "/Media/IMG-1.jpg")

        // The writer: one commit every 10 ms until told to stop.
        let flags = WriterFlags.start(pool, then: "UPDATE messages SET body = body || '!' WHERE id = ?")
        defer { flags.stop.store(true, ordering: .relaxed) }
        while flags.commits.load(ordering: .relaxed) < 5 { try await Task.sleep(for: .milliseconds(10)) }
        #expect(FileManager.default.fileExists(atPath: dbPath + "-wal"))

        let before = flags.commits.load(ordering: .relaxed)
        // Captures go to a folder of this test's own, so that other tests' captures running at the
        // same time cannot be mistaken for leftovers.
        let captures = s.path("captures")
        try FileManager.default.createDirectory(atPath: captures, withIntermediateDirectories: true)
        var opts = BackupOptions()
        opts.captureDirectory = captures
        let summary: BackupSummary = try await t.repo.backup(paths: [src], options: opts)
        let after = flags.commits.load(ordering: .relaxed)
        // Run a second backup while the writer goes on: captured again (never skipped by metadata).
        let second: BackupSummary = try await t.repo.backup(paths: [src], options: opts)
        flags.stop.store(true, ordering: .relaxed)
        #expect(after > before, "the app kept committing during the backup")
        #expect(summary.databasesCaptured == 1)
        #expect(second.databasesCaptured == 1)
        #expect(!summary.isPartial)

        let listing = try await t.repo.list(snapshot: summary.snapshotID, path: "app/Databases")
        #expect(listing.map(\.path) == ["app/Databases/msgstore.db"], "no -wal or -shm stored")
        #expect(listing.first?.isDatabase == true)

        let out = s.path("out")
        let r: RestoreSummary = try await t.repo.restore(snapshot: summary.snapshotID, target: URL(fileURLWithPath: out))
        #expect(r.isComplete)
        let restored = try DatabaseQueue(path: out + "/app/Databases/msgstore.db")
        let (check, count) = try await restored.read { db in
            (try String.fetchOne(db, sql: "PRAGMA integrity_check"), try Int.fetchOne(db, sql: "SELECT count(*) FROM messages"))
        }
        #expect(check == "ok")
        #expect((count ?? 0) >= 20_000 + before)

        // No capture copy left behind.
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: captures)
            .filter { $0.hasPrefix(SQLiteCapture.tempPrefix) }
        #expect(leftovers.isEmpty)
    }

    /// The capture is page-aligned: an unchanged database stores nothing new, and a few changed
    /// rows store only the groups of pages they touch (compressed).
    @Test func unchangedDatabaseDedupsAndSmallChangeStoresLittle() async throws {
        let s = Scratch()
        let t = try await TestRepo.make(s, options: TestRepo.unpadded)
        let src = s.path("src/app")
        try FileManager.default.createDirectory(atPath: src, withIntermediateDirectories: true)
        let q = try DatabaseQueue(path: src + "/store.db")
        try await q.write { db in
            try db.execute(sql: "CREATE TABLE t(id INTEGER PRIMARY KEY, body TEXT)")
            for i in 0..<50_000 { try db.execute(sql: "INSERT INTO t(body) VALUES (?)", arguments: ["row \(i) some text to compress"]) }
        }
        let first: BackupSummary = try await t.repo.backup(paths: [src])
        let second: BackupSummary = try await t.repo.backup(paths: [src])
        #expect(second.bytesNew == 0)
        #expect(first.bytesStored < first.bytesRead / 2, "database chunks are compressed")
        try await q.write { db in try db.execute(sql: "UPDATE t SET body = 'changed' WHERE id IN (5, 25000)") }
        let third: BackupSummary = try await t.repo.backup(paths: [src])
        #expect(third.bytesNew > 0 && third.bytesNew <= 4 * (64 << 10))
    }
}

final class WriterFlags: Sendable {
    let stop = Atomic(false)
    let commits = Atomic(0)

    /// The app at work: a thread that commits every 10 ms (a new message, then `then` on an older
    /// row's id) until `stop` is set.
    static func start(_ pool: DatabasePool, then: String) -> WriterFlags {
        let flags = WriterFlags()
        let writer = Thread {
            var i = 100_000
            while !flags.stop.load(ordering: .relaxed) {
                try? pool.write { db in
                    try db.execute(sql: "INSERT INTO messages(body, ts) VALUES (?, ?)", arguments: ["live \(i)", i])
                    try db.execute(sql: then, arguments: [i % 20_000 + 1])
                }
                i += 1
                flags.commits.add(1, ordering: .relaxed)
                usleep(10_000)
            }
        }
        writer.start()
        return flags
    }
}
