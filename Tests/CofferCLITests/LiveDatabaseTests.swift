import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A chat database in WAL mode with a writer committing every 10 ms (a real python3 process using
/// SQLite) while `coffer backup` runs: the backup finishes, and the restored copy is a valid database.
@Suite struct LiveDatabaseTests {
    static let writer = """
    import os, random, sqlite3, sys, time
    path, ready, stop, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("pragma journal_mode=wal")
    db.execute("create table if not exists messages(id integer primary key, chat integer, body text, media blob)")
    db.execute("create index if not exists messages_chat on messages(chat)")
    rng = random.Random(5)
    db.execute("begin")
    for i in range(20000):
        db.execute("insert into messages(chat, body, media) values (?,?,?)",
                   (rng.randrange(50), "message %d " % i * 3, rng.randbytes(700)))
    db.execute("commit")
    open(ready, "w").close()
    commits, end = 0, time.time() + seconds
    while not os.path.exists(stop) and time.time() < end:
        db.execute("begin")
        db.execute("insert into messages(chat, body, media) values (?,?,?)", (rng.randrange(50), "live", rng.randbytes(300)))
        db.execute("update messages set body = ? where id = ?", ("edited %d" % commits, rng.randrange(1, 20000)))
        db.execute("delete from messages where id = ?", (rng.randrange(1, 20000),))
        db.execute("commit")
        commits += 1
        time.sleep(0.01)
    print(commits)
    """

    @Test func liveWALDatabaseIsCapturedConsistently() async throws {
        let python = try #require(which("python3"), "python3 is needed for the live SQLite writer")
        let sqlite3 = which("sqlite3")
        let box = try Sandbox()
        try await box.initRepository()
        let data = box.path("app")
        try FileManager.default.createDirectory(at: data.appendingPathComponent("Databases"), withIntermediateDirectories: true)
        try Fixtures.makeBulk(at: data.appendingPathComponent("Media"), files: 3, size: 1 << 20, seed: 2)
        let db = data.appendingPathComponent("Databases/msgstore.db")
        let script = box.path("writer.py")
        try Data(Self.writer.utf8).write(to: script)
        let ready = box.path("ready"), stop = box.path("stop")

        let writer = Process()
        writer.executableURL = URL(fileURLWithPath: python)
        writer.arguments = [script.path, db.path, ready.path, stop.path, "120"]
        let out = Pipe()
        writer.standardOutput = out
        try writer.run()
        defer { if writer.isRunning { kill(writer.processIdentifier, SIGKILL) } }
        let deadline = Date().addingTimeInterval(60)
        while !FileManager.default.fileExists(atPath: ready.path), writer.isRunning, Date() < deadline { try? await Task.sleep(for: .microseconds(20_000)) }
        try #require(FileManager.default.fileExists(atPath: ready.path), "the writer did not start")
        try? await Task.sleep(for: .microseconds(300_000))  // let it commit for a while: the WAL now holds changes the main file lacks

        let first = try await box.backupJSON([data.path])
        let second = try await box.backupJSON([data.path])  // again, with the database still changing
        _ = FileManager.default.createFile(atPath: stop.path, contents: nil)
        writer.waitUntilExit()
        let commits = Int(String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            .trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        #expect(commits > 20, "the writer should have been committing during the backups (\(commits) commits)")
        #expect((first["databases_captured"] as? Int ?? 0) >= 1, "\(first)")
        #expect((second["databases_captured"] as? Int ?? 0) >= 1, "a live database is never skipped as unchanged: \(second)")

        // -wal / -shm are never stored on their own.
        let listing = try await box.ok(["ls", "latest"]).stdout
        #expect(listing.contains("app/Databases/msgstore.db"))
        #expect(!listing.contains("-wal") && !listing.contains("-shm"), "\(listing)")

        for snapshot in try await box.snapshotIDs() {
            let target = try await box.restore(snapshot, into: "restored-\(snapshot.prefix(6))")
            let restored = target.appendingPathComponent("app/Databases/msgstore.db")
            #expect(!FileManager.default.fileExists(atPath: restored.path + "-wal"))
            if let sqlite3 {
                let check = try await runProcess(sqlite3, [restored.path, "PRAGMA integrity_check; SELECT count(*) >= 19000 FROM messages;"])
                #expect(check.stdout == "ok\n1\n", "restored database: \(check)")
            } else {
                let check = try await runProcess(python, ["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print(c.execute('pragma integrity_check').fetchone()[0]); print(int(c.execute('select count(*) from messages').fetchone()[0] >= 19000))", restored.path])
                #expect(check.stdout == "ok\n1\n", "restored database: \(check)")
            }
        }
    }
}
