import Foundation
import Testing
@testable import CofferBackup
import CofferCore
import CofferStorage
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Backup filters with restic's semantics: restic 0.14 is run on the same tree with the same
/// options (`backup --dry-run --json -vv`) and must pick exactly the entries Coffer's dry run picks.
@Suite struct BackupFilterTests {
    /// restic's own pattern cases (internal/filter/filter_test.go), on the algorithm alone.
    @Test func patternSemantics() throws {
        let cases: [(String, String, Bool)] = [
            ("*.go", "/foo/bar/test.go", true), ("*.c", "/foo/bar/test.go", false), ("*", "/foo/bar/test.go", true),
            ("foo*", "/foo/bar/test.go", true), ("bar*", "/foo/bar/test.go", true), ("/bar*", "/foo/bar/test.go", false),
            ("bar/*", "/foo/bar/test.go", true), ("baz/*", "/foo/bar/test.go", false), ("bar/test.go", "/foo/bar/test.go", true),
            ("bar/*.go", "/foo/bar/test.go", true), ("ba*/*.go", "/foo/bar/test.go", true), ("bb*/*.go", "/foo/bar/test.go", false),
            ("test.*", "/foo/bar/test.go", true), ("tesT.*", "/foo/bar/test.go", false), ("bar/*", "/foo/bar/baz", true),
            ("bar", "/foo/bar", true), ("/foo/bar", "/foo/bar", true), ("/foo/bar/", "/foo/bar", true),
            ("/foo/bar", "/foo/baz", false), ("/foo/bar", "/foo/baz/", false), ("/foo///bar", "/foo/bar", true),
            ("/foo/../bar", "/foo/bar", false), ("/foo/../bar", "/bar", true), ("/foo", "/foo/baz", true),
            ("/foo/", "/foo/baz", true), ("/foo/*", "/foo", false), ("/foo/*", "/foo/baz", true),
            ("bar", "/foo/bar/baz", true), ("bar", "/foo/bar/test.go", true), ("/foo/*test.*", "/foo/bar/test.go", false),
            ("/foo/*/test.*", "/foo/bar/test.go", true), ("/foo/*/bar/test.*", "/foo/bar/test.go", false),
            ("/*/*/bar/test.*", "/foo/bar/test.go", false), ("/*/*/bar/test.*", "/foo/bar/baz/test.go", false),
            ("/*/*/baz/test.*", "/foo/bar/baz/test.go", true), ("/*/foo/bar/test.*", "/foo/bar/baz/test.go", false),
            ("sdk", "/foo/bar/sdk", true), ("sdk", "/foo/bar/sdk/test/sdk_foo.go", true),
            ("sdk/test/sdk_foo.go", "/foo/bar/sdk/test/sdk_foo.go", true), ("sdk/test/sdk_bar.go", "/foo/bar/sdk/test/sdk_foo.go", false),
            ("/foo/bar/sdk", "/foo/bar/sdk/test/sdk_foo.go", true),
            ("foo/**/bar/*.go", "/home/user/foo/work/special/project/bar/test.go", true),
            ("foo/**/bar/*.go", "/home/user/foo/bar/test.go", true), ("foo/**/bar/*.go", "/home/user/foo/test.c", false),
            ("foo/**/bar/*.go", "/foo/bar/main.go", true), ("foo/**/bar", "/home/user/foo/x/y/bar", true),
            ("foo/**/bar", "/home/user/foo/x/y/bar/main.go", true), ("user/**/important*", "/home/user/work/x/y/hidden/x", false),
            ("user/**/hidden*/**/c", "/home/user/work/x/y/hidden/z/a/b/c", true),
            ("[a-c]x", "/q/bx", true), ("[^a-c]x", "/q/bx", false), ("\\*x", "/q/*x", true), ("\\*x", "/q/ax", false),
            ("?.txt", "/q/a.txt", true), ("?.txt", "/q/ab.txt", false),
        ]
        for (pattern, path, want) in cases {
            #expect(try BackupFilter(excludes: [pattern]).excludes(path: path) == want, "\(pattern) vs \(path)")
        }
        #expect(try BackupFilter(caseInsensitiveExcludes: ["*.LOG"]).excludes(path: "/a/B.log"))
        #expect(try BackupFilter(caseInsensitiveExcludes: ["/A/b"]).excludes(path: "/a/B/c"))
        #expect(try !BackupFilter(excludes: ["*.LOG"]).excludes(path: "/a/B.log"))
        for bad in ["[ab", "x\\", "!keep", "", "."] {
            #expect(throws: BackupError.self, "\(bad)") { try BackupFilter(excludes: [bad]) }
        }
    }

    @Test func excludeFileAndFilesFrom() throws {
        let s = Scratch()
        setenv("COFFER_FILTER_TEST_DIR", "logs", 1)
        try "  # comment\n\n*.tmp  \n/abs/${COFFER_FILTER_TEST_DIR}/x\n$COFFER_FILTER_TEST_DIR/$COFFER_UNSET_VARIABLE_X\n"
            .write(toFile: s.path("ex"), atomically: true, encoding: .utf8)
        #expect(try BackupFilter.patterns(fromFile: s.path("ex")) == ["*.tmp", "/abs/logs/x", "logs/"])
        for f in ["a1", "a2", "b1"] { write(Data(), to: s.path("d/\(f)")) }
        try "\(s.path("d/a*"))\n# \(s.path("d/b1"))\n\(s.path("d/none*"))\n\(s.path("d/b1"))\n".write(toFile: s.path("ff"), atomically: true, encoding: .utf8)
        let (paths, unmatched) = try BackupFilter.paths(fromFile: s.path("ff"))
        #expect(paths == [s.path("d/a1"), s.path("d/a2"), s.path("d/b1")])
        #expect(unmatched == [s.path("d/none*")])
        #expect(throws: BackupError.self) { try BackupFilter.patterns(fromFile: s.path("missing")) }
    }

    /// A tree with the cases the options distinguish.
    static func makeTree(_ root: String) throws {
        for f in ["a.txt", "b.log", "C.LOG", "keep/x.Log", "keep/y.txt", "node_modules/m/i.js", "src/main.go", "src/deep/z/main.go",
                  "src/deep/z/q.c", "build/out.o", "cache/junk", "fake-cache/junk", "fake-cache/CACHEDIR.TAG", "sp ace/[br]acket.txt",
                  "tmp1/t", ".hidden/h", "docs/.dot.txt"] {
            write(Data("x".utf8), to: root + "/" + f)
        }
        write(Data((BackupFilter.cacheDirSignature + "\n# made by a test\n").utf8), to: root + "/cache/CACHEDIR.TAG")
        write(Data("Signature: wrong".utf8), to: root + "/fake-cache/CACHEDIR.TAG")
        try FileManager.default.createDirectory(atPath: root + "/empty", withIntermediateDirectories: true)
        // No symlink: restic's verbose output does not list them, so it could not be compared.
    }

    @Test(.timeLimit(.minutes(5))) func picksWhatResticPicks() async throws {
        let restic = try #require(ForgetPolicyTests.which("restic"), "restic (0.14+) is the reference: apt-get install restic")
        let s = Scratch()
        let t = try await TestRepo.make(s)
        let src = s.path("src")
        try Self.makeTree(src)
        var env = ProcessInfo.processInfo.environment
        env["RESTIC_PASSWORD"] = "reference"
        env["RESTIC_REPOSITORY"] = s.path("restic")
        env["RESTIC_CACHE_DIR"] = s.path("restic-cache")
        try ForgetPolicyTests.run(restic, ["init"], env: env)
        try "# build output\nbuild\n*.o\n".write(toFile: s.path("excludes"), atomically: true, encoding: .utf8)

        let cases: [[String]] = [
            [],
            ["--exclude", "*.log"],
            ["--iexclude", "*.log"],
            ["--exclude", "node_modules", "--exclude", "src/**/*.go"],
            ["--exclude", "\(src)/keep/*"],
            ["--exclude", "/keep"],
            ["--exclude", "sp ace/\\[br]acket.txt", "--exclude", "tmp?"],
            ["--exclude", ".*"],
            ["--exclude-caches"],
            ["--exclude-file", s.path("excludes"), "--iexclude", "KEEP/X*"],
            ["--exclude", "src/deep", "--exclude", "[a-b]*"],
        ]
        for args in cases {
            var excludes: [String] = [], iexcludes: [String] = [], caches = false
            var i = 0
            while i < args.count {
                switch args[i] {
                case "--exclude": excludes.append(args[i + 1]); i += 2
                case "--iexclude": iexcludes.append(args[i + 1]); i += 2
                case "--exclude-file": excludes += try BackupFilter.patterns(fromFile: args[i + 1]); i += 2
                case "--exclude-caches": caches = true; i += 1
                default: Issue.record("unknown \(args[i])"); i += 1
                }
            }
            let filter = try BackupFilter(excludes: excludes, caseInsensitiveExcludes: iexcludes, excludeCaches: caches)
            let coffer = try await Self.dryRun(t.repo, [src], filter)
            let reference = try Self.resticDryRun(restic, env: env, args, targets: [src])
            #expect(coffer.symmetricDifference(reference).isEmpty, "\(args): Coffer only \(coffer.subtracting(reference).sorted()), restic only \(reference.subtracting(coffer).sorted())")
        }
        #expect(try await t.repo.snapshots().isEmpty, "dry runs made no snapshot")
        let data = try await t.storage.list(prefix: "data/"), index = try await t.storage.list(prefix: "index/")
        #expect(data.isEmpty && index.isEmpty, "and wrote nothing")
    }

    /// `--one-file-system`: a tmpfs mounted inside the tree is kept as an empty folder, like restic.
    @Test(.enabled(if: Self.canMount, "needs root on Linux to mount a tmpfs"))
    func oneFileSystemStopsAtMountPoints() async throws {
        let restic = try #require(ForgetPolicyTests.which("restic"), "restic (0.14+) is the reference: apt-get install restic")
        let s = Scratch()
        let t = try await TestRepo.make(s)
        let src = s.path("src")
        write(Data("x".utf8), to: src + "/outside.txt")
        try FileManager.default.createDirectory(atPath: src + "/mnt", withIntermediateDirectories: true)
        #expect(try ForgetPolicyTests.run("/bin/mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", src + "/mnt"], env: [:]).isEmpty)
        defer { _ = try? ForgetPolicyTests.run("/bin/umount", [src + "/mnt"], env: [:]) }
        write(Data("y".utf8), to: src + "/mnt/inside.txt")
        write(Data("z".utf8), to: src + "/mnt/sub/deeper.txt")
        var env = ProcessInfo.processInfo.environment
        env["RESTIC_PASSWORD"] = "reference"
        env["RESTIC_REPOSITORY"] = s.path("restic")
        env["RESTIC_CACHE_DIR"] = s.path("restic-cache")
        try ForgetPolicyTests.run(restic, ["init"], env: env)

        let across = try await Self.dryRun(t.repo, [src], try BackupFilter())
        #expect(across.contains(src + "/mnt/sub/deeper.txt"))
        let coffer = try await Self.dryRun(t.repo, [src], try BackupFilter(oneFileSystem: true))
        #expect(coffer == [src, src + "/outside.txt", src + "/mnt"])
        #expect(coffer == (try Self.resticDryRun(restic, env: env, ["--one-file-system"], targets: [src])))
        // A real backup stores the mount point as an empty folder.
        var o = BackupOptions()
        o.filter = try BackupFilter(oneFileSystem: true)
        let summary: BackupSummary = try await t.repo.backup(paths: [src], options: o)
        let listed = try await t.repo.list(snapshot: summary.snapshotID, path: nil, recursive: true).map(\.path)
        #expect(listed.contains { $0.hasSuffix("src/mnt") } && listed.contains { $0.hasSuffix("src/outside.txt") }, "\(listed)")
        #expect(!listed.contains { $0.contains("src/mnt/") }, "\(listed)")
    }

    static var canMount: Bool {
        #if os(Linux)
        return getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/bin/mount")
        #else
        return false
        #endif
    }

    /// The source paths a Coffer dry run would store.
    static func dryRun(_ repo: Repository, _ paths: [String], _ filter: BackupFilter) async throws -> Set<String> {
        var o = BackupOptions()
        o.filter = filter
        o.dryRun = true
        let summary: BackupSummary = try await repo.backup(paths: paths, options: o)
        #expect(summary.snapshotID.isEmpty)
        return Set(try #require(summary.dryRunEntries).map(\.path))
    }

    /// The paths restic's dry run would store at or below the targets (it also lists their parents).
    static func resticDryRun(_ restic: String, env: [String: String], _ args: [String], targets: [String]) throws -> Set<String> {
        let out = try ForgetPolicyTests.run(restic, ["backup", "--dry-run", "--json", "-vv"] + args + targets, env: env)
        var items = Set<String>()
        for line in out.split(separator: "\n") {
            guard let obj = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  obj["message_type"] as? String == "verbose_status", var item = obj["item"] as? String else { continue }
            while item.count > 1, item.hasSuffix("/") { item.removeLast() }
            if targets.contains(where: { item == $0 || item.hasPrefix($0 + "/") }) { items.insert(item) }
        }
        return items
    }
}
