import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A prune suspended (SIGSTOP) between reading the snapshots and deleting, for more than half the
/// grace period, acts on a stale view: a backup may have committed meanwhile a snapshot that needs
/// a marked pack. It must delete nothing, say so, and leave the repository clean; the next prune
/// deletes.
@Suite struct SuspendedPruneTests {
    static func isStopped(_ pid: Int32) async -> Bool {
        if let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") {
            let state = stat[stat.index(close, offsetBy: 2)...].prefix(1)
            return state == "T" || state == "t"
        }
        let r = try? await runProcess("/bin/ps", ["-o", "stat=", "-p", "\(pid)"])
        return r?.stdout.trimmingCharacters(in: .whitespacesAndNewlines).hasPrefix("T") ?? false
    }

    @Test("a prune suspended past half the grace period before deleting deletes nothing; the next one does")
    func suspendedPruneDeletesNothing() async throws {
        let box = try Sandbox()
        try await box.initRepository(["--pack-size", "1"])
        let src = box.path("src")
        try Fixtures.makeBulk(at: src, files: 4, size: 400_000, seed: 21)
        try await box.backupJSON([src.path])
        try FileManager.default.removeItem(at: src.appendingPathComponent("file-0001.bin"))
        try FileManager.default.removeItem(at: src.appendingPathComponent("file-0002.bin"))
        let latest = try #require(try await box.backupJSON([src.path])["snapshot_id"] as? String)
        try await box.ok(["forget", "--keep-last", "1"])
        let marked = try #require(try await box.ok(["prune", "--grace", "4s", "--json"]).json() as? [String: Any])
        #expect(marked["objects_marked"] as? Int ?? 0 >= 1, "\(marked)")
        try? await Task.sleep(for: .microseconds(5_200_000))  // the marks come due

        // The prune stops itself just before deleting; it stays stopped for more than 2 s (G/2).
        let dataBefore = box.objects("data")
        let out = box.path("prune-out"), err = box.path("prune-err")
        _ = FileManager.default.createFile(atPath: out.path, contents: nil)
        _ = FileManager.default.createFile(atPath: err.path, contents: nil)
        let p = Process()
        p.executableURL = cofferBinary
        p.arguments = ["prune", "--grace", "4s"]
        var env = box.environment
        env["COFFER_TEST_STOP_BEFORE_DELETING"] = "1"
        p.environment = env
        p.standardOutput = try FileHandle(forWritingTo: out)
        p.standardError = try FileHandle(forWritingTo: err)
        try p.run()
        let deadline = Date().addingTimeInterval(30)
        while await !Self.isStopped(p.processIdentifier), p.isRunning, Date() < deadline { try? await Task.sleep(for: .microseconds(10_000)) }
        let stopped = await Self.isStopped(p.processIdentifier)
        #expect(stopped, "the prune should have stopped itself before deleting")
        try? await Task.sleep(for: .microseconds(3_000_000))
        kill(p.processIdentifier, SIGCONT)
        p.waitUntilExit()
        let stderr = (try? String(contentsOf: err, encoding: .utf8)) ?? ""
        #expect(p.terminationStatus != 0, "a prune with a stale view must not report success")
        #expect(stderr.contains("deleted nothing") && stderr.contains("run prune again"), "\(stderr)")
        #expect(box.objects("data") == dataBefore, "no pack may be deleted from a stale view")
        #expect(try await box.run(["check", "--read-data"]).status == 0)

        // A prune that is not suspended deletes what is due.
        let done = try #require(try await box.ok(["prune", "--grace", "4s", "--json"]).json() as? [String: Any])
        #expect(done["objects_deleted"] as? Int ?? 0 >= 1, "\(done)")
        #expect(box.objects("data").count < dataBefore.count)
        // Prunes with nothing to do keep the live index (they used to delete it without a replacement).
        try await box.ok(["prune", "--grace", "4s"])
        try await box.ok(["prune", "--now"])
        #expect(box.objects("index").count >= 1)
        #expect(try await box.ok(["check", "--read-data"]).stdout.contains("no errors found"))
        let target = try await box.restore(latest, into: "restored")
        try expectNoWrongData(original: src, restored: target.appendingPathComponent("src"))
        #expect(FileManager.default.fileExists(atPath: target.appendingPathComponent("src/file-0003.bin").path))
    }
}
