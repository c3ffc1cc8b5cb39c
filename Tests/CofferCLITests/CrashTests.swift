import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Real crashes: `kill -9` of `coffer backup` and `coffer prune` at random moments. After each,
/// every earlier snapshot restores byte-identically, `check` is clean, the next run succeeds, and an
/// interrupted backup resumes from its index checkpoints instead of uploading everything again.
/// Serialized: the kill moments are drawn within measured durations, which parallel load would skew.
@Suite(.serialized) struct CrashTests {
    static let kills = 10
    /// Bounds on each test's wall time (the runs stop early rather than run long on a slow machine;
    /// together under two minutes).
    static let budget: TimeInterval = 50
    static let backupBudget: TimeInterval = 60

    /// Restores `snapshot` and expects it to equal `expected` (relative path → entry) exactly.
    static func expectRestores(_ box: Sandbox, _ snapshot: String, equals expected: [String: Entry], root: String,
                               _ what: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let target = try box.restore(snapshot, into: "verify")
        let diffs = TreeCompare.differences(expected, try TreeCompare.read(target.appendingPathComponent(root)))
        #expect(diffs.isEmpty, "\(what): snapshot \(snapshot.prefix(8)) does not restore identically: \(diffs.prefix(5))",
                sourceLocation: sourceLocation)
        try FileManager.default.removeItem(at: target)
    }

    static func expectCheckClean(_ box: Sandbox, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let r = try box.run(["check", "--json"])
        #expect(r.status == 0, "\(what): check is not clean:\n\(r)", sourceLocation: sourceLocation)
    }

    @Test func killedBackupsLoseNothingAndResume() throws {
        let box = try Sandbox()
        try box.initRepository(["--pack-size", "2"])
        let base = box.path("base")
        try Fixtures.makeTree(at: base)
        let s0 = try #require(try box.backupJSON([base.path])["snapshotID"] as? String)
        let baseTree = try TreeCompare.read(base)

        // A dataset that takes a second or two to back up; every round writes new content into it.
        let bulk = box.path("bulk")
        let files = 48, size = 4 << 20
        let bulkBytes = files * size
        // Calibrate: how long does a whole backup of it take here?
        try Fixtures.makeBulk(at: bulk, files: files, size: size, seed: 100)
        let t0 = Date()
        let calibrated = try box.backupJSON([bulk.path], extra: ["--checkpoint-mib", "4"])
        var duration = Date().timeIntervalSince(t0)
        var previous: (id: String, tree: [String: Entry]) = (try #require(calibrated["snapshotID"] as? String), try TreeCompare.read(bulk))

        var rng = SystemRandomNumberGenerator()
        let start = Date()
        var killed = 0, resumed = 0, round = 0
        while killed < Self.kills, Date().timeIntervalSince(start) < Self.backupBudget {
            round += 1
            try Fixtures.makeBulk(at: bulk, files: files, size: size, seed: UInt64(100 + round))
            let indexesBefore = box.objects("index").count
            let delay = Double.random(in: 0.05...0.95, using: &rng) * duration
            let started = Date()
            let r = try box.run(["backup", "--json", "--checkpoint-mib", "4", bulk.path], killAfter: delay)
            let checkpointed = box.objects("index").count > indexesBefore
            if r.signalled { killed += 1 } else {
                #expect(r.status == 0, "round \(round): \(r)")
                duration = Date().timeIntervalSince(started)  // a whole backup of new data: recalibrate
            }

            // Earlier snapshots intact, check clean.
            try Self.expectCheckClean(box, "round \(round) after kill at \(String(format: "%.2f", delay)) s")
            try Self.expectRestores(box, s0, equals: baseTree, root: "base", "round \(round)")
            try Self.expectRestores(box, previous.id, equals: previous.tree, root: "bulk", "round \(round)")

            // The next backup succeeds, and does not upload again what the killed one checkpointed.
            let next = try box.backupJSON([bulk.path], extra: ["--checkpoint-mib", "4"])
            if !r.signalled { continue }
            let bytesNew = next["bytesNew"] as? Int ?? -1
            #expect(bytesNew >= 0 && bytesNew <= bulkBytes)
            if checkpointed {
                resumed += 1
                #expect(bytesNew < bulkBytes - (2 << 20),
                        "round \(round): the killed backup had written an index checkpoint, yet the next one stored \(bytesNew) of \(bulkBytes) bytes anew")
            }
            previous = (try #require(next["snapshotID"] as? String), try TreeCompare.read(bulk))
        }
        print("kill -9 backup: \(round) rounds, \(killed) killed, \(resumed) resumed from a checkpoint, backup takes ~\(String(format: "%.2f", duration)) s")
        #expect(killed >= Self.kills, "only \(killed) backups were killed within the time budget")
        #expect(resumed >= 1, "no killed backup had reached an index checkpoint: resume was never exercised")
        // Every snapshot made along the way, and all their data, still verify.
        let finalCheck = try box.run(["check", "--read-data"])
        #expect(finalCheck.status == 0, "\(finalCheck)")
    }

    @Test func killedPrunesLoseNothing() throws {
        let box = try Sandbox()
        try box.initRepository(["--pack-size", "1"])
        let data = box.path("data")
        let sets = data.appendingPathComponent("sets")
        try Fixtures.makeTree(at: data)
        // Many small live files: prune has many blobs to locate before it may delete anything.
        try Fixtures.makeBulk(at: data.appendingPathComponent("small"), files: 300, size: 3000, seed: 499)
        var truth: [(id: String, tree: [String: Entry])] = []
        // Each round adds a set of small files (packed together) and removes every other file of the
        // previous set, backs up, forgets all but the newest two snapshots, and prunes (killed at a
        // random moment). The removed halves leave packs partly dead, so prune must repack.
        func step(_ round: Int) throws {
            try Fixtures.makeBulk(at: sets.appendingPathComponent("set-\(round)"), files: 60, size: 40_000, seed: UInt64(500 + round))
            let previous = sets.appendingPathComponent("set-\(round - 1)")
            for i in stride(from: 1, to: 60, by: 2) {
                try? FileManager.default.removeItem(at: previous.appendingPathComponent(String(format: "file-%04d.bin", i)))
            }
            try? FileManager.default.removeItem(at: sets.appendingPathComponent("set-\(round - 3)"))
            let id = try #require(try box.backupJSON([data.path])["snapshotID"] as? String)
            truth.append((id, try TreeCompare.read(data)))
            let forget = try box.run(["forget", "--keep-last", "2"])
            #expect(forget.status == 0, "\(forget)")
            truth = Array(truth.suffix(2))
        }
        try step(0)
        try step(1)
        try step(2)
        var t0 = Date()
        let calibration = try #require(try box.ok(["prune", "--now", "--json"]).json() as? [String: Any])
        var duration = max(0.02, Date().timeIntervalSince(t0))
        #expect((calibration["packsRepacked"] as? Int ?? 0) >= 1, "the scenario should make prune repack: \(calibration)")

        var rng = SystemRandomNumberGenerator()
        let start = Date()
        var killed = 0, round = 2, repacked = 0
        while killed < Self.kills, Date().timeIntervalSince(start) < Self.budget {
            round += 1
            try step(round)
            let delay = Double.random(in: 0.02...0.98, using: &rng) * duration
            t0 = Date()
            let r = try box.run(["prune", "--now", "--json"], killAfter: delay)
            if !r.signalled, let report = try? r.json() as? [String: Any] { repacked += report["packsRepacked"] as? Int ?? 0 }
            if r.signalled { killed += 1 } else {
                #expect(r.status == 0, "round \(round): \(r)")
                duration = max(0.02, Date().timeIntervalSince(t0))
            }
            try Self.expectCheckClean(box, "round \(round) after prune killed at \(String(format: "%.2f", delay)) s")
            for (id, tree) in truth {
                try Self.expectRestores(box, id, equals: tree, root: "data", "round \(round)")
            }
        }
        print("kill -9 prune: \(round - 2) rounds, \(killed) killed, prune takes ~\(String(format: "%.2f", duration)) s, \(repacked) packs repacked by the prunes that finished")
        #expect(killed >= Self.kills, "only \(killed) prunes were killed within the time budget")
        // After all that, a full prune and a backup still work and everything verifies.
        try box.ok(["prune", "--now"])
        try box.backupJSON([data.path])
        let finalCheck = try box.run(["check", "--read-data"])
        #expect(finalCheck.status == 0, "\(finalCheck)")
        #expect(try box.snapshotIDs().count == 3)
    }
}
