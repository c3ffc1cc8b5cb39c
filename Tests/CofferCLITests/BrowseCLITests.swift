import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `diff`, `find`, `stats` and `dump` through the real binary, on two snapshots of a changing tree.
@Suite struct BrowseCLITests {
    /// A SQLite database (python3's sqlite3, rollback journal so no side files stay) with `rows` rows.
    static func sqlite(_ path: URL, rows: Int, start: Int = 0) async throws {
        let python = try #require(which("python3"), "python3 is needed to write a SQLite database")
        let script = """
            import sqlite3, sys
            db = sqlite3.connect(sys.argv[1])
            db.execute("create table if not exists t (id integer primary key, body text)")
            db.executemany("insert into t values (?, ?)", [(i, "row %d " % i * 20) for i in range(int(sys.argv[2]), int(sys.argv[2]) + int(sys.argv[3]))])
            db.commit()
            db.close()
            """
        let r = try await runProcess(python, ["-c", script, path.path, "\(start)", "\(rows)"])
        #expect(r.status == 0, "\(r)")
    }

    /// Runs `coffer ARGS > file` and returns the file's bytes (stdout as bytes, not text).
    static func rawStdout(_ box: Sandbox, _ args: [String]) async throws -> Data {
        let out = box.path("stdout-\(UUID().uuidString.prefix(6))")
        let r = try await runProcess("/bin/sh", ["-c", "out=$1; shift; exec \"$@\" > \"$out\"", "sh", out.path, cofferBinary.path] + args,
                               env: box.environment)
        #expect(r.status == 0, "coffer \(args.joined(separator: " ")): \(r)")
        return try Data(contentsOf: out)
    }

    @Test func diffNamesExactlyWhatChanged() async throws {
        let box = try Sandbox()
        let data = box.path("data")
        try Fixtures.makeTree(at: data)
        try await Self.sqlite(data.appendingPathComponent("docs/app.db"), rows: 2_000)
        try await box.initRepository()
        try await box.backupJSON([data.path])

        // The mutation: a small edit, additions, deletions, a database write, a mode change.
        let notes = try FileHandle(forWritingTo: data.appendingPathComponent("docs/notes.txt"))
        try notes.seekToEnd()
        try notes.write(contentsOf: Data("one more line\n".utf8))
        try notes.close()
        try Data("new\n".utf8).write(to: data.appendingPathComponent("docs/new.txt"))
        try FileManager.default.createDirectory(at: data.appendingPathComponent("added-dir"), withIntermediateDirectories: true)
        try Data(repeating: 7, count: 5000).write(to: data.appendingPathComponent("added-dir/x.bin"))
        try FileManager.default.removeItem(at: data.appendingPathComponent("media/photo.jpg"))
        try FileManager.default.removeItem(at: data.appendingPathComponent("sp ace"))
        try await Self.sqlite(data.appendingPathComponent("docs/app.db"), rows: 50, start: 2_000)
        chmod(data.appendingPathComponent("docs/deep/odd-size.bin").path, 0o644)
        try await box.backupJSON([data.path])

        let ids = try await box.snapshotIDs()
        #expect(ids.count == 2)
        let r = try await box.ok(["diff", String(ids[0].prefix(8)), ids[1], "--json"])
        try await SchemaValidation.expectValid(r.stdout, schema: "diff")
        let doc = try #require(try r.json() as? [String: Any])
        let changes = try #require(doc["changes"] as? [[String: Any]])
        let got = Set(changes.map { "\($0["change"] as? String ?? "?") \($0["path"] as? String ?? "?")" })
        let want: Set<String> = [
            "M data/docs/notes.txt", "M data/docs/app.db", "+ data/docs/new.txt", "+ data/added-dir", "+ data/added-dir/x.bin",
            "- data/media/photo.jpg", "- data/sp ace", "- data/sp ace/naïve ✓.txt", "U data/docs/deep/odd-size.bin",
        ]
        #expect(got == want, "diff reported \(got.sorted()), expected \(want.sorted())")
        let totals = try #require(doc["totals"] as? [String: Any])
        #expect(totals["files_added"] as? Int == 2)
        #expect(totals["files_removed"] as? Int == 2)
        #expect(totals["files_modified"] as? Int == 2)
        #expect(totals["directories_added"] as? Int == 1)
        #expect(totals["directories_removed"] as? Int == 1)
        #expect(totals["metadata_changed"] as? Int == 1)
        // The photo's random bytes are gone; the added file and the changed chunks are new.
        #expect((totals["bytes_removed"] as? Int ?? 0) >= 300_000)
        #expect((totals["bytes_added"] as? Int ?? 0) >= 5_000)

        let text = try await box.ok(["diff", ids[0], ids[1]]).stdout
        #expect(text.contains("M    data/docs/notes.txt"), "\(text)")
        #expect(text.contains("+    data/added-dir/\n"), "\(text)")
        #expect(text.contains("Files:       2 new, 2 removed, 2 changed"), "\(text)")

        // Same snapshot twice: nothing.
        let same = try #require(try await box.ok(["diff", ids[1], ids[1], "--json"]).json() as? [String: Any])
        #expect((same["changes"] as? [Any])?.isEmpty == true)
    }

    @Test func findStatsAndDump() async throws {
        let box = try Sandbox()
        let data = box.path("data")
        try Fixtures.makeTree(at: data)
        // Names and link targets beyond ustar's 100-byte name field.
        let longDir = "a-rather-long-folder-name-to-push-the-path-beyond-one-hundred-bytes-" + String(repeating: "x", count: 40)
        try FileManager.default.createDirectory(at: data.appendingPathComponent("deep/\(longDir)/\(longDir)"), withIntermediateDirectories: true)
        try Data("far down\n".utf8).write(to: data.appendingPathComponent("deep/\(longDir)/\(longDir)/Long-Name-" + String(repeating: "n", count: 120) + ".TXT"))
        try FileManager.default.createSymbolicLink(atPath: data.appendingPathComponent("deep/longlink").path,
                                                   withDestinationPath: longDir + "/" + longDir)
        try await box.initRepository()
        try await box.backupJSON([data.path])
        try Data("second\n".utf8).write(to: data.appendingPathComponent("docs/only-in-second.txt"))
        try await box.backupJSON([data.path])
        let ids = try await box.snapshotIDs()

        // find: newest first, names and paths, case, --snapshot.
        let f = try await box.ok(["find", "*.txt", "--json"])
        try await SchemaValidation.expectValid(f.stdout, schema: "find")
        let found = try #require(try f.json() as? [[String: Any]])
        #expect(found.map { $0["snapshot"] as? String } == [ids[1], ids[0]])
        let newest = Set(((found.first?["matches"] as? [[String: Any]]) ?? []).compactMap { $0["path"] as? String })
        #expect(newest == ["data/docs/notes.txt", "data/docs/only-in-second.txt", "data/sp ace/naïve ✓.txt"])
        let caseless = try #require(try await box.ok(["find", "-i", "LONG-NAME-*", "--snapshot", ids[0], "--json"]).json() as? [[String: Any]])
        #expect(caseless.count == 1 && caseless[0]["snapshot"] as? String == ids[0])
        #expect((try await box.ok(["find", "LONG-NAME-*", "--json"]).json() as? [Any])?.isEmpty == true)
        let byPath = try #require(try await box.ok(["find", "data/media/*", "-s", "latest", "--json"]).json() as? [[String: Any]])
        let mediaPaths = ((byPath.first?["matches"] as? [[String: Any]]) ?? []).compactMap { $0["path"] as? String }
        #expect(mediaPaths.sorted() == ["data/media/photo.jpg", "data/media/video.mp4"])
        #expect(try await box.ok(["find", "only-in-second.txt"]).stdout.contains(String(ids[1].prefix(8))))

        // stats: restore size is the sum of the file sizes; two near-identical snapshots dedup ~2x.
        var restoreSize = 0, files = 0
        for (_, e) in try TreeCompare.read(data) {
            if case .file(let d) = e.kind { restoreSize += d.count; files += 1 }
        }
        let one = try await box.ok(["stats", "latest", "--json"])
        try await SchemaValidation.expectValid(one.stdout, schema: "stats")
        let s1 = try #require(try one.json() as? [String: Any])
        #expect(s1["restore_size"] as? Int == restoreSize)
        #expect(s1["total_size"] as? Int == restoreSize)
        #expect(s1["total_file_count"] as? Int == files)
        #expect(s1["snapshot"] as? String == ids[1])
        #expect((s1["stored_size"] as? Int ?? 0) > 3_800_000)
        // Only the new file's blob and the changed trees are the second snapshot's own.
        #expect((s1["unique_stored_size"] as? Int ?? Int.max) < 20_000)
        let all = try await box.ok(["stats", "--mode", "raw-data", "--json"])
        try await SchemaValidation.expectValid(all.stdout, schema: "stats")
        let s2 = try #require(try all.json() as? [String: Any])
        #expect(s2["snapshot"] == nil)
        #expect(s2["snapshots_count"] as? Int == 2)
        #expect(s2["restore_size"] as? Int == 2 * restoreSize - 7)
        #expect(s2["total_size"] as? Int == s2["stored_size"] as? Int)
        let dedup = try #require(s2["dedup_ratio"] as? Double)
        #expect(dedup > 1.9 && dedup < 2.1, "dedup ratio \(dedup)")
        #expect(try await box.ok(["stats"]).stdout.contains("Restore size:"))

        // dump: one file, byte for byte.
        let photo = try await Self.rawStdout(box, ["dump", "latest", "data/media/photo.jpg"])
        #expect(photo == (try Data(contentsOf: data.appendingPathComponent("media/photo.jpg"))))
        let byAbsolute = try await Self.rawStdout(box, ["dump", ids[0], data.appendingPathComponent("docs/notes.txt").path])
        #expect(byAbsolute == (try Data(contentsOf: data.appendingPathComponent("docs/notes.txt"))))

        // dump a folder: a tar that GNU tar lists and extracts to the same tree.
        let tarBytes = try await Self.rawStdout(box, ["dump", "latest", "data"])
        let tarFile = box.path("data.tar")
        try tarBytes.write(to: tarFile)
        let tarPath = try #require(which("tar"), "tar is needed to read the dump")
        let listing = try await runProcess(tarPath, ["-tf", tarFile.path])
        #expect(listing.status == 0, "\(listing)")
        #expect(listing.stdout.contains("data/deep/\(longDir)/\(longDir)/Long-Name-"), "\(listing.stdout)")
        let out = box.path("untar")
        try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
        let x = try await runProcess(tarPath, ["-xf", tarFile.path, "-C", out.path])
        #expect(x.status == 0, "\(x)")
        var want = try TreeCompare.read(data)
        var got = try TreeCompare.read(out.appendingPathComponent("data"))
        // tar keeps whole seconds: compare everything else.
        for k in want.keys { want[k]?.mtimeSeconds = 0; want[k]?.mtimeNanos = 0 }
        for k in got.keys { got[k]?.mtimeSeconds = 0; got[k]?.mtimeNanos = 0 }
        #expect(TreeCompare.differences(want, got).isEmpty, "\(TreeCompare.differences(want, got))")
        // Whole seconds of the mtimes survive.
        var st = stat()
        #expect(stat(out.appendingPathComponent("data/media/video.mp4").path, &st) == 0)
        #if canImport(Darwin)
        let seconds = Int(st.st_mtimespec.tv_sec)
        #else
        let seconds = Int(st.st_mtim.tv_sec)
        #endif
        #expect(seconds == 1_600_000_000 + 2 * (86_400 + 17))

        // --archive tar for a single file.
        let single = try await Self.rawStdout(box, ["dump", "--archive", "tar", "latest", "data/docs/notes.txt"])
        try single.write(to: tarFile)
        #expect(try await runProcess(tarPath, ["-tf", tarFile.path]).stdout == "data/docs/notes.txt\n")
        // A path that is not there: a clear error.
        let missing = try await box.run(["dump", "latest", "data/nope"])
        #expect(missing.status != 0 && missing.stderr.contains("data/nope"), "\(missing)")
    }
}
