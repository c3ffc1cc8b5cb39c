import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Real crashes: `kill -9` of `coffer backup` and `coffer prune`, first at injected points (the
/// process kills itself with SIGKILL when it reaches a named step: `COFFER_TEST_CRASH_AT`, see
/// `TestHooks` in the engine), so that every step is crashed at on every machine whatever its speed,
/// then at random moments. After each, every earlier snapshot restores byte-identically, `check` is
/// clean, the next run succeeds, and an interrupted backup resumes from what it stored instead of
/// uploading everything again. Each round asserts on what the crash actually left (packs, index
/// objects, snapshots), never on how many random kills happened to land.
@Suite(.serialized) struct CrashTests {
    /// Random kills after the injected ones (each round asserts on what happened, killed or not).
    static let randomKills = 4

    /// Restores `snapshot` and expects it to equal `expected` (relative path → entry) exactly.
    static func expectRestores(_ box: Sandbox, _ snapshot: String, equals expected: [String: Entry], root: String,
                               _ what: String, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let target = try await box.restore(snapshot, into: "verify")
        let diffs = TreeCompare.differences(expected, try TreeCompare.read(target.appendingPathComponent(root)))
        #expect(diffs.isEmpty, "\(what): snapshot \(snapshot.prefix(8)) does not restore identically: \(diffs.prefix(5))",
                sourceLocation: sourceLocation)
        try FileManager.default.removeItem(at: target)
    }

    static func expectCheckClean(_ box: Sandbox, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let r = try await box.run(["check", "--json"])
        #expect(r.status == 0, "\(what): check is not clean:\n\(r)", sourceLocation: sourceLocation)
    }

    @Test func killedBackupsLoseNothingAndResume() async throws {
        let box = try Sandbox()
        try await box.initRepository(["--pack-size", "2"])
        let base = box.path("base")
        try Fixtures.makeTree(at: base)
        let s0 = try #require(try await box.backupJSON([base.path])["snapshot_id"] as? String)
        let baseTree = try TreeCompare.read(base)

        // Every round writes new content (1 MiB chunks, 2 MiB packs, a checkpoint every 4 MiB).
        let bulk = box.path("bulk")
        let files = 8, size = 4 << 20
        let bulkBytes = files * size
        let chunk = 1 << 20
        try Fixtures.makeBulk(at: bulk, files: files, size: size, seed: 100)
        let t0 = Date()
        let first = try await box.backupJSON([bulk.path], extra: ["--checkpoint-mib", "4"])
        var duration = Date().timeIntervalSince(t0)
        var previous: (id: String, tree: [String: Entry]) = (try #require(first["snapshot_id"] as? String), try TreeCompare.read(bulk))

        let injected = ["backup-pack:1", "backup-index:1", "backup-pack:6", "backup-index:3", "backup-packed", "backup-snapshot"]
        var rng = SystemRandomNumberGenerator()
        var killedAtRandom = 0
        for round in 1...(injected.count + Self.randomKills) {
            try Fixtures.makeBulk(at: bulk, files: files, size: size, seed: UInt64(100 + round))
            let tree = try TreeCompare.read(bulk)
            let point: String? = round <= injected.count ? injected[round - 1] : nil
            let packsBefore = Set(box.objects("data")), indexesBefore = Set(box.objects("index"))
            let snapshotsBefore = try await box.snapshotIDs()
            let started = Date()
            let r: RunResult
            if let point {
                r = try await box.run(["backup", "--json", "--checkpoint-mib", "4", bulk.path], env: ["COFFER_TEST_CRASH_AT": point])
                #expect(r.signalled, "round \(round): the backup never reached \(point):\n\(r)")
            } else {
                let delay = Double.random(in: 0.05...0.95, using: &rng) * duration
                r = try await box.run(["backup", "--json", "--checkpoint-mib", "4", bulk.path], killAfter: delay)
                if r.signalled { killedAtRandom += 1 }
            }
            let what = "round \(round) (\(point ?? "random kill"))"
            let newPacks = Set(box.objects("data")).subtracting(packsBefore)
            let newIndexes = Set(box.objects("index")).subtracting(indexesBefore)
            let snapshotsAfter = try await box.snapshotIDs()
            if !r.signalled {
                #expect(r.status == 0, "\(what): \(r)")
                duration = Date().timeIntervalSince(started)  // a whole backup of new data: recalibrate
            }
            // What the crash left, as the write order (packs, index, snapshot) says it must be.
            // A random kill can land after the snapshot was written, before the process exited:
            // then that backup is finished too (and its snapshot must restore below).
            let finished = !r.signalled || point == "backup-snapshot"
                || (point == nil && snapshotsAfter.count == snapshotsBefore.count + 1)
            #expect(snapshotsAfter.count == snapshotsBefore.count + (finished ? 1 : 0),
                    "\(what): \(snapshotsBefore.count) snapshots before, \(snapshotsAfter.count) after")
            if point?.hasPrefix("backup-index") == true { #expect(!newIndexes.isEmpty, "\(what): no index object was written") }
            if point != nil { #expect(!newPacks.isEmpty, "\(what): no pack was stored before the crash") }

            // Earlier snapshots intact, check clean; a snapshot the crash left restores too.
            try await Self.expectCheckClean(box, what)
            try await Self.expectRestores(box, s0, equals: baseTree, root: "base", what)
            try await Self.expectRestores(box, previous.id, equals: previous.tree, root: "bulk", what)
            if finished, let made = snapshotsAfter.last {
                try await Self.expectRestores(box, made, equals: tree, root: "bulk", "\(what), its own snapshot")
            }

            // The next backup succeeds and does not upload again what the crashed one stored.
            let next = try await box.backupJSON([bulk.path], extra: ["--checkpoint-mib", "4"])
            let bytesNew = next["bytes_new"] as? Int ?? -1
            #expect(bytesNew >= 0 && bytesNew <= bulkBytes, "\(what): \(next)")
            if r.signalled {
                if point == "backup-packed" || point == "backup-snapshot" {
                    #expect(bytesNew == 0, "\(what): everything was stored and indexed, yet the next backup stored \(bytesNew) bytes anew")
                } else if !newPacks.isEmpty {
                    #expect(bytesNew <= bulkBytes - chunk,
                            "\(what): the crashed backup left \(newPacks.count) packs (\(newIndexes.count) index objects), yet the next one stored \(bytesNew) of \(bulkBytes) bytes anew")
                }
            }
            previous = (try #require(next["snapshot_id"] as? String), tree)
        }
        print("kill -9 backup: \(injected.count) crashes at injected points, \(Self.randomKills) random kill moments of which \(killedAtRandom) landed before the end, a backup takes ~\(String(format: "%.2f", duration)) s")
        // Every snapshot made along the way, and all their data, still verify.
        let finalCheck = try await box.run(["check", "--read-data"])
        #expect(finalCheck.status == 0, "\(finalCheck)")
    }

    @Test func killedPrunesLoseNothing() async throws {
        let box = try Sandbox()
        try await box.initRepository(["--pack-size", "1"])
        let data = box.path("data")
        let sets = data.appendingPathComponent("sets")
        try Fixtures.makeTree(at: data)
        // Many small live files: prune has many blobs to locate before it may delete anything.
        try Fixtures.makeBulk(at: data.appendingPathComponent("small"), files: 300, size: 3000, seed: 499)
        var truth: [(id: String, tree: [String: Entry])] = []
        // Each round adds a set of small files (packed together) and removes every other file of the
        // previous set, backs up, forgets all but the newest two snapshots, and prunes (crashed at an
        // injected step, or killed at a random moment). The removed halves leave packs partly dead,
        // so prune must repack.
        func step(_ round: Int) async throws {
            try Fixtures.makeBulk(at: sets.appendingPathComponent("set-\(round)"), files: 60, size: 40_000, seed: UInt64(500 + round))
            let previous = sets.appendingPathComponent("set-\(round - 1)")
            for i in stride(from: 1, to: 60, by: 2) {
                try? FileManager.default.removeItem(at: previous.appendingPathComponent(String(format: "file-%04d.bin", i)))
            }
            try? FileManager.default.removeItem(at: sets.appendingPathComponent("set-\(round - 3)"))
            let id = try #require(try await box.backupJSON([data.path])["snapshot_id"] as? String)
            truth.append((id, try TreeCompare.read(data)))
            let forget = try await box.run(["forget", "--keep-last", "2"])
            #expect(forget.status == 0, "\(forget)")
            truth = Array(truth.suffix(2))
        }
        try await step(0)
        try await step(1)
        try await step(2)
        var t0 = Date()
        let calibration = try #require(try await box.ok(["prune", "--now", "--json"]).json() as? [String: Any])
        var duration = max(0.02, Date().timeIntervalSince(t0))
        #expect((calibration["packs_repacked"] as? Int ?? 0) >= 1, "the scenario should make prune repack: \(calibration)")

        let injected = ["prune-repacked", "prune-indexed", "prune-marked", "prune-deleting"]
        var rng = SystemRandomNumberGenerator()
        var killedAtRandom = 0, repacked = 0
        for round in 3..<(3 + injected.count + Self.randomKills) {
            try await step(round)
            let point: String? = round - 3 < injected.count ? injected[round - 3] : nil
            let marksBefore = box.objects("marks"), packsBefore = Set(box.objects("data"))
            let r: RunResult
            if let point {
                r = try await box.run(["prune", "--now", "--json"], env: ["COFFER_TEST_CRASH_AT": point])
                #expect(r.signalled, "round \(round): the prune never reached \(point):\n\(r)")
            } else {
                let delay = Double.random(in: 0.02...0.98, using: &rng) * duration
                t0 = Date()
                r = try await box.run(["prune", "--now", "--json"], killAfter: delay)
                if r.signalled { killedAtRandom += 1 }
            }
            let what = "round \(round) (\(point ?? "random kill"))"
            if r.signalled {
                // Nothing is deleted before the mark exists; a crash while deleting leaves the mark.
                let packsAfter = Set(box.objects("data"))
                if point == "prune-repacked" || point == "prune-indexed" {
                    #expect(packsBefore.isSubset(of: packsAfter), "\(what): packs were deleted before the mark was written")
                    #expect(box.objects("marks") == marksBefore, "\(what)")
                }
                if point == "prune-marked" || point == "prune-deleting" {
                    #expect(box.objects("marks").count == marksBefore.count + 1, "\(what): the mark is not there")
                }
                if point == "prune-deleting" { #expect(!packsBefore.isSubset(of: packsAfter), "\(what): nothing was deleted yet") }
            } else {
                #expect(r.status == 0, "\(what): \(r)")
                if let report = try? r.json() as? [String: Any] { repacked += report["packs_repacked"] as? Int ?? 0 }
                duration = max(0.02, Date().timeIntervalSince(t0))
            }
            try await Self.expectCheckClean(box, what)
            for (id, tree) in truth {
                try await Self.expectRestores(box, id, equals: tree, root: "data", what)
            }
        }
        print("kill -9 prune: \(injected.count) crashes at injected points, \(Self.randomKills) random kill moments of which \(killedAtRandom) landed, prune takes ~\(String(format: "%.2f", duration)) s, \(repacked) packs repacked by the prunes that finished")
        // After all that, a full prune and a backup still work and everything verifies.
        try await box.ok(["prune", "--now"])
        try await box.backupJSON([data.path])
        let finalCheck = try await box.run(["check", "--read-data"])
        #expect(finalCheck.status == 0, "\(finalCheck)")
        #expect(try await box.snapshotIDs().count == 3)
    }
}
