import Foundation
import Testing

/// `coffer backup` with --exclude, --exclude-file, --iexclude, --files-from, --exclude-caches and
/// --dry-run, through the real binary: the dry run writes nothing and lists exactly what the real
/// backup then stores.
@Suite struct BackupFilterCLITests {
    @Test func filtersAndDryRun() async throws {
        let box = try Sandbox()
        try await box.initRepository()
        let src = box.path("src")
        let fm = FileManager.default
        for f in ["a.txt", "b.log", "C.LOG", "keep/x.txt", "node_modules/m/i.js", "cache/junk", "build/out.o"] {
            let u = src.appendingPathComponent(f)
            try fm.createDirectory(at: u.deletingLastPathComponent(), withIntermediateDirectories: true)
            try Data("x".utf8).write(to: u)
        }
        try Data("Signature: 8a477f597d28d172789f06886806bc55\n".utf8).write(to: src.appendingPathComponent("cache/CACHEDIR.TAG"))
        // Old mtimes: files modified within 2 s of a backup are read again by the next one.
        for f in try fm.subpathsOfDirectory(atPath: src.path) {
            try fm.setAttributes([.modificationDate: Date().addingTimeInterval(-3600)], ofItemAtPath: src.appendingPathComponent(f).path)
        }
        try "# generated\n$FILTER_TEST_DIR/*\n  *.o\n".write(to: box.path("excludes"), atomically: true, encoding: .utf8)
        let flags = ["--exclude", "node_modules", "--iexclude", "*.log", "--exclude-file", box.path("excludes").path, "--exclude-caches"]
        let env = ["FILTER_TEST_DIR": "build"]

        // Dry run: the list, and not one byte written to the repository.
        let before = ForgetCLITests.files(box.repo)
        let dry = try await box.backupJSON([src.path], extra: ["--dry-run"] + flags, env: env)
        #expect(ForgetCLITests.files(box.repo) == before, "a dry run wrote to the repository")
        #expect(dry["dry_run"] as? Bool == true)
        #expect(dry["snapshot_id"] as? String == "")
        let entries = try #require(dry["entries"] as? [[String: Any]])
        let planned = Set(entries.compactMap { $0["path"] as? String }.map { "src" + $0.dropFirst(src.path.count) })
        #expect(planned == ["src", "src/a.txt", "src/keep", "src/keep/x.txt", "src/cache", "src/cache/CACHEDIR.TAG", "src/build"].asSet,
                "\(planned.sorted())")
        #expect(entries.first { ($0["path"] as? String)?.hasSuffix("a.txt") == true }?["status"] as? String == "new")
        #expect(try await box.snapshotIDs().isEmpty)
        let text = try await box.ok(["backup", "-n"] + flags + [src.path], env: env).stdout
        #expect(text.contains("new        \(src.path)/a.txt"), "\(text)")
        #expect(text.contains("nothing was read, stored or written"), "\(text)")

        // The real backup stores exactly that.
        try await box.backupJSON([src.path], extra: flags, env: env)
        let listed = try #require(try await box.ok(["ls", "latest", "--json"]).json() as? [[String: Any]]).compactMap { $0["path"] as? String }
        let root = String(box.root.path.dropFirst())  // snapshot paths have no leading slash
        let stored = Set(listed.map { $0.hasPrefix(root + "/") ? String($0.dropFirst(root.count + 1)) : $0 }.filter { $0.hasPrefix("src") })
        #expect(stored == planned, "stored \(stored.sorted()), planned \(planned.sorted())")
        // A second dry run: the files are taken over unread.
        let again = try await box.backupJSON([src.path], extra: ["-n"] + flags, env: env)
        let statuses = Set((again["entries"] as? [[String: Any]] ?? []).compactMap { $0["status"] as? String })
        #expect(statuses == ["unchanged"], "\(again)")

        // --files-from: globs expanded, comments skipped, a line matching nothing named on stderr.
        try "# list\n\(src.path)/a*\n\(src.path)/keep\n\(src.path)/nothing-*\n".write(to: box.path("list"), atomically: true, encoding: .utf8)
        let r = try await box.run(["backup", "--json", "-n", "--files-from", box.path("list").path])
        #expect(r.status == 0, "\(r)")
        #expect(r.stderr.contains("nothing-*"), "\(r)")
        let fromList = try #require(try r.json() as? [String: Any])
        let listedPaths = Set((fromList["entries"] as? [[String: Any]] ?? []).compactMap { $0["path"] as? String })
        #expect(listedPaths == ["\(src.path)/a.txt", "\(src.path)/keep", "\(src.path)/keep/x.txt"], "\(listedPaths)")

        // Bad input: named, nothing done.
        let bad = try await box.run(["backup", "--exclude", "[oops", src.path])
        #expect(bad.status == 64)
        #expect(bad.stderr.contains("[oops"), "\(bad)")
        let missing = try await box.run(["backup", "--exclude-file", box.path("nope").path, src.path])
        #expect(missing.status == 64, "\(missing)")
        #expect(try await box.snapshotIDs().count == 1)
    }
}

private extension Array where Element == String {
    var asSet: Set<String> { Set(self) }
}
