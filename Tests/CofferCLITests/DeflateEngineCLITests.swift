import Foundation
import Testing

/// The two DEFLATE engines (zlib, libdeflate) write the same format: a repository written by one is
/// checked and restored by the other, through the real binary.
@Suite struct DeflateEngineCLITests {
    /// A SQLite database of `rows` repetitive text rows (compressible: the engine deflates database pages).
    static func makeDatabase(at url: URL, rows: Int, word: String) async throws {
        let sqlite3 = try #require(which("sqlite3"), "sqlite3 is needed (scripts/test installs it)")
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        let sql = """
            CREATE TABLE message(id INTEGER PRIMARY KEY, body TEXT);
            WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < \(rows))
            INSERT INTO message(body) SELECT printf('%s %d: the quick brown fox jumps over the lazy dog, again and again', '\(word)', i) FROM n;
            """
        let r = try await runProcess(sqlite3, [url.path, sql])
        #expect(r.status == 0, "\(r)")
    }

    static func storedBytes(_ box: Sandbox) throws -> Int {
        try box.objects("data").reduce(0) { sum, rel in
            sum + ((try FileManager.default.attributesOfItem(atPath: box.repo.appendingPathComponent(rel).path)[.size] as? Int) ?? 0)
        }
    }

    @Test("a repository written with zlib and with libdeflate is checked and restored by either")
    func enginesReadEachOther() async throws {
        let box = try Sandbox()
        #if os(Linux)
        // The default engine here is libdeflate (scripts/test installs it): otherwise this test
        // would compare zlib with itself.
        #expect(try await box.ok(["--version"]).stdout.contains("deflate: libdeflate"))
        #endif
        #expect(try await box.ok(["--version"], env: ["COFFER_DEFLATE": "zlib"]).stdout.contains("deflate: zlib"))
        // No padding: stored sizes then measure compression, not the 1 MiB padding floor.
        try await box.initRepository(["--padding", "none"])
        let one = box.path("one"), two = box.path("two")
        try await Self.makeDatabase(at: one.appendingPathComponent("a.db"), rows: 40_000, word: "zlib")
        try await box.ok(["backup", one.path], env: ["COFFER_DEFLATE": "zlib"])
        let afterZlib = try Self.storedBytes(box)
        try await Self.makeDatabase(at: two.appendingPathComponent("b.db"), rows: 40_000, word: "libdeflate")
        try await box.ok(["backup", two.path], env: ["COFFER_DEFLATE": "libdeflate"])
        let afterBoth = try Self.storedBytes(box)
        // Both databases were stored compressed (each is ~3.5 MB of repetitive text).
        let dbSize = try #require(try FileManager.default.attributesOfItem(atPath: one.appendingPathComponent("a.db").path)[.size] as? Int)
        #expect(dbSize > 2_000_000)
        #expect(afterZlib < dbSize / 3, "zlib stored \(afterZlib) of \(dbSize)")
        #expect(afterBoth - afterZlib < dbSize / 3, "libdeflate stored \(afterBoth - afterZlib) of \(dbSize)")

        for engine in ["zlib", "libdeflate"] {
            try await box.ok(["check", "--read-data"], env: ["COFFER_DEFLATE": engine])
        }
        let ids = try await box.snapshotIDs()
        #expect(ids.count == 2)
        // Every snapshot restored by each engine: one of the two was written by the other engine.
        var restoredNames: Set<String> = []
        for id in ids {
            for engine in ["zlib", "libdeflate"] {
                let target = box.path("restored-\(id.prefix(8))-\(engine)")
                try await box.ok(["restore", id, "--target", target.path], env: ["COFFER_DEFLATE": engine])
                let files = FileManager.default.enumerator(at: target, includingPropertiesForKeys: nil)?
                    .compactMap { $0 as? URL }.filter { ["a.db", "b.db"].contains($0.lastPathComponent) } ?? []
                #expect(files.count == 1, "snapshot \(id) restored \(files)")
                for file in files {
                    let source = (file.lastPathComponent == "a.db" ? one : two).appendingPathComponent(file.lastPathComponent)
                    // A captured database is a consistent copy (SQLite's backup API), not the same
                    // bytes: compare what it holds.
                    let sqlite3 = try #require(which("sqlite3"))
                    let got = try await runProcess(sqlite3, [file.path, ".dump"]), want = try await runProcess(sqlite3, [source.path, ".dump"])
                    #expect(got.status == 0 && got.stdout.count > 1_000_000)
                    #expect(got.stdout == want.stdout, "\(file.lastPathComponent) restored by \(engine)")
                    restoredNames.insert(file.lastPathComponent)
                }
            }
        }
        #expect(restoredNames == ["a.db", "b.db"])
    }
}
