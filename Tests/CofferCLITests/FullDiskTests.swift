import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A full disk (issue 12, problem 3): a backup that fails for want of space leaves unindexed packs;
/// `prune` could not free them (two-phase prune marks none younger than the grace period, `--now`
/// fails writing its index and mark). `prune --unsafe-recover-no-free-space` deletes them without
/// writing anything first. The repository lives on a small tmpfs the test mounts (as root).
@Suite(.serialized) struct FullDiskTests {
    /// Mounts a tmpfs of `mib` MiB at `dir`; false when this process may not mount (not root).
    static func mountTmpfs(_ dir: URL, mib: Int) -> Bool {
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return sh("mount -t tmpfs -o size=\(mib)m tmpfs '\(dir.path)' >/dev/null 2>&1") == 0
    }

    static func unmount(_ dir: URL) { _ = sh("umount '\(dir.path)'") }

    /// A shell command, waited for on this thread (a mount takes milliseconds; `canMount` is a
    /// static initializer, which cannot suspend).
    static func sh(_ command: String) -> Int32 {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", command]
        guard (try? p.run()) != nil else { return -1 }
        p.waitUntilExit()
        return p.terminationStatus
    }

    static let canMount: Bool = {
        #if os(Linux)
        guard getuid() == 0 else { return false }
        let probe = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-mount-probe-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: probe) }
        guard mountTmpfs(probe, mib: 1) else { return false }
        unmount(probe)
        return true
        #else
        return false
        #endif
    }()

    /// Fills the file system holding `dir` until a write fails for want of space.
    static func fill(_ dir: URL) {
        let fd = open(dir.appendingPathComponent("filler").path, O_WRONLY | O_CREAT | O_APPEND, 0o600)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var block = [UInt8](repeating: 0xa5, count: 4096)
        while block.withUnsafeMutableBytes({ write(fd, $0.baseAddress!, 4096) }) == 4096 {}
    }

    @Test(.enabled(if: FullDiskTests.canMount, "needs root on Linux to mount a small tmpfs (the full disk)"))
    func pruneFreesAFullDiskWithoutWritingFirst() async throws {
        let box = try Sandbox()
        let small = box.path("small")
        #expect(Self.mountTmpfs(small, mib: 24), "mounting the tmpfs failed")
        defer { Self.unmount(small) }
        let repo = small.appendingPathComponent("repo")
        box.extraEnvironment["COFFER_REPO"] = repo.path
        try await box.initRepository(["--pack-size", "1"])
        let base = box.path("base")
        try Fixtures.makeTree(at: base)
        let s0 = try #require(try await box.backupJSON([base.path])["snapshot_id"] as? String)
        let repoObjects = { (kind: String) in box.objects(kind, in: repo) }

        // A backup bigger than the space left fails (exit 11) and leaves its packs, unindexed.
        let bulk = box.path("bulk")
        try Fixtures.makeBulk(at: bulk, files: 40, size: 1 << 20, seed: 77)
        let failed = try await box.run(["backup", bulk.path])
        #expect(failed.status == 11 && failed.stderr.contains("no space"), "\(failed)")
        let check = try #require(try await box.ok(["check", "--json"]).json() as? [String: Any])
        let unindexed = try #require(check["unindexed_packs"] as? [String])
        #expect(unindexed.count >= 5, "\(check)")
        Self.fill(small)  // whatever the failed write left free goes too: the disk is full

        // What was stuck: a two-phase prune marks nothing that young, and --now cannot write.
        let twoPhase = try await box.run(["prune", "--json"])
        #expect(twoPhase.status != 0 || ((try? twoPhase.json() as? [String: Any])?["objects_deleted"] as? Int) == 0, "\(twoPhase)")
        let now = try await box.run(["prune", "--now"])
        #expect(now.status == 11, "prune --now should fail for want of space:\n\(now)")

        let before = (index: repoObjects("index"), marks: repoObjects("marks"), snapshots: repoObjects("snapshots"))
        let r = try await box.run(["prune", "--unsafe-recover-no-free-space", "--json"])
        #expect(r.status == 0, "\(r)")
        let report = try #require(try r.json() as? [String: Any])
        #expect(report["objects_deleted"] as? Int == unindexed.count, "\(report)")
        #expect((report["bytes_freed"] as? Int ?? 0) >= unindexed.count * (1 << 20) / 2, "\(report)")
        // Nothing was written, nothing else removed.
        #expect(repoObjects("index") == before.index && repoObjects("marks") == before.marks && repoObjects("snapshots") == before.snapshots)
        #expect(repoObjects("clock").isEmpty)
        for name in unindexed { #expect(!FileManager.default.fileExists(atPath: repo.appendingPathComponent(name).path), "\(name) is still there") }

        // The repository is whole and usable again.
        let after = try #require(try await box.ok(["check", "--read-data", "--json"]).json() as? [String: Any])
        #expect((after["unindexed_packs"] as? [String])?.isEmpty == true, "\(after)")
        let target = try await box.restore(s0, into: "restored")
        #expect(TreeCompare.differences(try TreeCompare.read(base), try TreeCompare.read(target.appendingPathComponent("base"))).isEmpty)
        try FileManager.default.removeItem(at: small.appendingPathComponent("filler"))
        try await box.ok(["prune", "--now"])
        let small2 = box.path("bulk-small")
        try Fixtures.makeBulk(at: small2, files: 3, size: 1 << 20, seed: 78)
        try await box.backupJSON([small2.path])
        let final = try await box.run(["check", "--read-data"])
        #expect(final.status == 0, "\(final)")
    }
}
