import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

@Suite struct PartialAndStaleTests {
    /// Files the backup cannot read are reported, the rest is backed up, and the exit code is 3.
    /// Tests often run as root (CI), for whom chmod 000 does not stop reads: then coffer runs as
    /// `nobody` through `setpriv`, on a sandbox that belongs to nobody.
    @Test func unreadableFilesMakeAPartialBackup() async throws {
        let box = try Sandbox()
        let data = box.path("data")
        try Fixtures.makeTree(at: data)
        try Data("top secret\n".utf8).write(to: data.appendingPathComponent("docs/secret.txt"))
        try FileManager.default.createDirectory(at: data.appendingPathComponent("locked"), withIntermediateDirectories: true)
        try Data("inside\n".utf8).write(to: data.appendingPathComponent("locked/inner.txt"))

        var wrapper: [String] = []
        if geteuid() == 0 {
            let setpriv = try #require(which("setpriv"), "running as root: setpriv (util-linux) is needed to drop to nobody")
            wrapper = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
            // Everything in the sandbox belongs to nobody, so only the chmod-ed entries are unreadable.
            _ = try await runProcess("/bin/chown", ["-R", "65534:65534", box.root.path])
            chmod(box.root.path, 0o755)
        }
        chmod(data.appendingPathComponent("docs/secret.txt").path, 0)
        chmod(data.appendingPathComponent("locked").path, 0)
        func coffer(_ args: [String]) async throws -> RunResult {
            let all = wrapper + [cofferBinary.path] + args
            return try await runProcess(all[0], Array(all.dropFirst()), env: box.environment)
        }
        let initResult = try await coffer(["init"])
        #expect(initResult.status == 0, "\(initResult)")
        let r = try await coffer(["backup", "--json", data.path])
        #expect(r.status == 3, "\(r)")
        let summary = try #require(try r.json() as? [String: Any], "\(r)")
        #expect(summary["partial"] as? Bool == true)
        let unreadable = try #require(summary["unreadable"] as? [[String: Any]])
        let paths = unreadable.compactMap { $0["path"] as? String }
        #expect(paths.contains { $0.hasSuffix("docs/secret.txt") }, "\(paths)")
        #expect(paths.contains { $0.hasSuffix("locked") || $0.hasSuffix("locked/inner.txt") }, "\(paths)")
        #expect(summary["files_new"] as? Int == 7, "the readable files are all backed up: \(summary)")

        // Text mode says so too.
        let text = try await coffer(["backup", data.path])
        #expect(text.status == 3)
        #expect(text.stderr.contains("secret.txt"), "\(text)")
        #expect(text.stdout.contains("NOT backed up"), "\(text)")

        // The snapshot exists and restores the readable rest.
        let target = box.path("out")
        let restore = try await coffer(["restore", "latest", "--target", target.path])
        #expect(restore.status == 0, "\(restore)")
        chmod(data.appendingPathComponent("docs/secret.txt").path, 0o644)
        chmod(data.appendingPathComponent("locked").path, 0o755)
        var original = try TreeCompare.read(data)
        original.removeValue(forKey: "docs/secret.txt")
        original.removeValue(forKey: "locked/inner.txt")
        original.removeValue(forKey: "locked")
        var restored = try TreeCompare.read(target.appendingPathComponent("data"))
        restored.removeValue(forKey: "locked")  // an unreadable folder may be kept as an empty entry
        let diffs = TreeCompare.differences(original, restored)
        #expect(diffs.isEmpty, "\(diffs.joined(separator: "\n"))")
    }

    /// A repository put back to an older copy (rollback by the provider, or a stale sync) is refused
    /// for backup and restore with the stale-repository code, and nothing is written to it.
    @Test func staleRepositoryIsRefused() async throws {
        let box = try Sandbox()
        try await box.initRepository()
        let data = box.path("data")
        try Fixtures.makeTree(at: data)
        try await box.backupJSON([data.path])
        let old = box.path("old-copy")
        try FileManager.default.copyItem(at: box.repo, to: old)
        try Data("day two\n".utf8).write(to: data.appendingPathComponent("docs/new.txt"))
        try await box.backupJSON([data.path])
        try FileManager.default.removeItem(at: box.repo)
        try FileManager.default.moveItem(at: old, to: box.repo)
        let before = box.objects("data") + box.objects("index") + box.objects("snapshots")

        let backup = try await box.run(["backup", data.path])
        #expect(backup.status == 14, "\(backup)")
        #expect(backup.stderr.lowercased().contains("older"), "\(backup)")
        let restore = try await box.run(["restore", "latest", "--target", box.path("out").path])
        #expect(restore.status == 14, "\(restore)")
        let prune = try await box.run(["prune", "--now"])
        #expect(prune.status == 14, "\(prune)")
        #expect(box.objects("data") + box.objects("index") + box.objects("snapshots") == before, "a refused run wrote to the repository")
    }
}
