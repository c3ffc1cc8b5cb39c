import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Prune refuses, before it changes anything, when a snapshot this device has seen is missing
/// (a provider hiding the newest snapshot would otherwise get its data pruned away).
@Suite struct HiddenSnapshotPruneTests {
    /// Every object file of the repository with its bytes.
    static func contents(_ box: Sandbox) -> [String: Data] {
        var out: [String: Data] = [:]
        for kind in ["config", "data", "index", "snapshots", "marks"] {
            if kind == "config" { out["config"] = FileManager.default.contents(atPath: box.repo.appendingPathComponent("config").path); continue }
            for rel in box.objects(kind) { out[rel] = FileManager.default.contents(atPath: box.repo.appendingPathComponent(rel).path) }
        }
        return out
    }

    @Test("prune refuses to run when the newest snapshot a device has seen is hidden, from that writer and from another")
    func hiddenSnapshotStopsPrune() async throws {
        let box = try Sandbox()
        let digits = try await box.initRepository(["--pack-size", "1"])
        let src = box.path("src")
        try Fixtures.makeBulk(at: src, files: 3, size: 300_000, seed: 5)
        try await box.backupJSON([src.path])
        try Fixtures.makeBulk(at: src.appendingPathComponent("more"), files: 2, size: 300_000, seed: 6)
        let newest = try #require(try await box.backupJSON([src.path])["snapshot_id"] as? String)
        // A second device (same key, its own COFFER_HOME and writer id) backs up its own folder:
        // it has now seen the first writer's newest snapshot.
        let homeB = box.path("home-b")
        try FileManager.default.createDirectory(at: homeB, withIntermediateDirectories: true)
        let envB = ["COFFER_HOME": homeB.path, "COFFER_KEY": digits]
        let srcB = box.path("src-b")
        try Fixtures.makeBulk(at: srcB, files: 1, size: 1000, seed: 7)
        try await box.backupJSON([srcB.path], env: envB)
        try await box.ok(["forget", "--keep-last", "1"])  // the older snapshot goes: prune would have work to do

        // The provider hides the newest snapshot.
        let hidden = box.repo.appendingPathComponent("snapshots/\(newest)")
        let away = box.path("hidden-snapshot")
        try FileManager.default.moveItem(at: hidden, to: away)
        let before = Self.contents(box)
        for (who, env) in [("the writer", [String: String]()), ("another device", envB)] {
            for args in [["prune"], ["prune", "--now"]] {
                let r = try await box.run(args, env: env)
                #expect(r.status == 14, "\(who): \(args) must refuse a repository that hides a snapshot (exit 14):\n\(r)")
                #expect(r.stderr.contains("rolled back") || r.stderr.contains("older copy"), "\(r)")
                #expect(Self.contents(box) == before, "\(who): \(args) changed the repository before refusing")
            }
        }
        // Shown again, prune runs and the snapshot still restores.
        try FileManager.default.moveItem(at: away, to: hidden)
        try await box.ok(["prune", "--now"])
        let target = try await box.restore(newest, into: "restored")
        try expectNoWrongData(original: src, restored: target.appendingPathComponent("src"))
        #expect(try await box.ok(["check", "--read-data"]).stdout.contains("no errors found"))
    }
}
