import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `coffer key rotate` as a real process, killed with SIGKILL at random moments: after each kill
/// the repository opens with the device's key for whatever config is at the root (the old key
/// before the commit, the new one after), and running the command again finishes the job. At the
/// end every snapshot restores identically, `check --read-data` is clean, nothing of an old
/// generation remains, and the old key (from a file or another device) is refused with exit 12.
@Suite(.serialized) struct KeyRotateCLITests {
    static let kills = 4
    static let budget: TimeInterval = 25

    /// Object names of the repository folder, relative, without directories or temporary files.
    static func allObjects(_ box: Sandbox) -> [String] {
        guard let e = FileManager.default.enumerator(atPath: box.repo.path) else { return [] }
        var out: [String] = []
        for case let rel as String in e {
            var isDir: ObjCBool = false
            if FileManager.default.fileExists(atPath: box.repo.appendingPathComponent(rel).path, isDirectory: &isDir),
               !isDir.boolValue, !rel.split(separator: "/").last!.hasPrefix(".") { out.append(rel) }
        }
        return out.sorted()
    }

    @Test func killedRotationsFinishAndLoseNothing() async throws {
        let box = try Sandbox()
        let firstDigits = try await box.initRepository(["--pack-size", "1"])
        let src = box.path("src")
        try Fixtures.makeTree(at: src)
        var expected: [[String: Entry]] = []
        for round in 0..<3 {
            try Fixtures.makeBulk(at: src.appendingPathComponent("bulk-\(round)"), files: 6, size: 1 << 20, seed: UInt64(round + 7))
            try await box.backupJSON([src.path])
            expected.append(try TreeCompare.read(src))
        }
        let oldKeyFile = box.path("old.key")
        try (firstDigits + "\n").write(to: oldKeyFile, atomically: true, encoding: .utf8)
        // A second device that holds only the first key.
        let otherHome = box.path("other-home")
        try FileManager.default.copyItem(at: box.home, to: otherHome)

        // Calibrate: a whole rotation.
        var t0 = Date()
        try await box.ok(["key", "rotate", "-q"])
        var duration = max(0.2, Date().timeIntervalSince(t0))

        var rng = SystemRandomNumberGenerator()
        let start = Date()
        var killed = 0, attempts = 0, beforeCommit = 0, afterCommit = 0
        while killed < Self.kills, Date().timeIntervalSince(start) < Self.budget {
            attempts += 1
            let at = Double.random(in: 0.02...(duration * 0.95), using: &rng)
            t0 = Date()
            let configBefore = try Data(contentsOf: box.repo.appendingPathComponent("config"))
            let r = try await box.run(["key", "rotate", "-q"], killAfter: at)
            if r.signalled {
                killed += 1
                // The device's key for the config at the root opens it, whichever side of the commit,
                // with every snapshot whole: probed as a device holding the same keys but no job.
                let probe = box.path("probe-\(killed)")
                try FileManager.default.copyItem(at: box.home, to: probe)
                try? FileManager.default.removeItem(at: probe.appendingPathComponent("rotations"))
                let committed = FileManager.default.fileExists(atPath: box.repo.appendingPathComponent("gen").path)
                    && (try? Data(contentsOf: box.repo.appendingPathComponent("config"))) != configBefore
                if committed { afterCommit += 1 } else { beforeCommit += 1 }
                let check = try await box.run(["check", "--read-data"], env: ["COFFER_HOME": probe.path])
                #expect(check.status == 0, "after a kill at \(at) s the repository does not open whole with the device's key:\n\(check)")
                #expect(check.stdout.contains("checked \(expected.count) snapshots"), "\(check)")
                // Running it again finishes the job.
                try await box.ok(["key", "rotate", "-q"])
            } else {
                #expect(r.status == 0, "\(r)")
                duration = max(0.2, Date().timeIntervalSince(t0))
            }
        }
        // And at each step around the commit point, where a random kill rarely lands.
        for step in ["job-saved", "staged", "recorded", "committed", "cleaning"] {
            let r = try await box.run(["key", "rotate", "-q"], env: ["COFFER_TEST_CRASH_AT": step])
            #expect(r.signalled, "\(step): \(r)")
            killed += 1
            let probe = box.path("probe-\(step)")
            try FileManager.default.copyItem(at: box.home, to: probe)
            try? FileManager.default.removeItem(at: probe.appendingPathComponent("rotations"))
            let check = try await box.run(["check", "--read-data"], env: ["COFFER_HOME": probe.path])
            #expect(check.status == 0 && check.stdout.contains("checked \(expected.count) snapshots"),
                    "killed at \(step): the repository does not open whole with the device's key:\n\(check)")
            try await box.ok(["key", "rotate", "-q"])
        }
        // Last, a kill in the middle of the copy (after its first re-encrypted pack, before any index
        // names it), so that the generation checked below comes from a resumed run: packs uploaded
        // after the last checkpoint of the killed run must not be left behind.
        let configBefore = try Data(contentsOf: box.repo.appendingPathComponent("config"))
        let mid = try await box.run(["key", "rotate", "-q"], env: ["COFFER_TEST_CRASH_AT": "rotate-pack"])
        #expect(mid.signalled, "the kill at the first re-encrypted pack did not land: \(mid)")
        #expect(try Data(contentsOf: box.repo.appendingPathComponent("config")) == configBefore,
                "a rotation killed in its copy must not have committed")
        killed += 1
        try await box.ok(["key", "rotate", "-q"])
        #expect(killed >= 6, "only \(killed) of \(attempts + 6) rotations were killed mid-way")
        print("key rotate: \(killed) kills, \(beforeCommit) before the commit, \(afterCommit) after it")

        // Everything is there, under the newest key only.
        let ids = try await box.snapshotIDs()
        #expect(ids.count == expected.count)
        for (i, id) in ids.enumerated() {
            let target = try await box.restore(id, into: "verify-\(i)")
            let diffs = TreeCompare.differences(expected[i], try TreeCompare.read(target.appendingPathComponent("src")))
            #expect(diffs.isEmpty, "snapshot \(i) after the rotations: \(diffs.prefix(5))")
        }
        let check = try await box.run(["check", "--read-data", "--json"])
        #expect(check.status == 0, "\(check)")
        let report = try #require(try check.json() as? [String: Any])
        #expect((report["unindexed_packs"] as? [Any])?.isEmpty == true, "resumed rotations leave no stray packs: \(check.stdout)")
        let objects = Self.allObjects(box)
        let gens = Set(objects.filter { $0.hasPrefix("gen/") }.map { $0.split(separator: "/")[1] })
        #expect(gens.count == 1, "exactly one generation is left: \(gens)")
        #expect(objects.allSatisfy { $0 == "config" || $0.hasPrefix("gen/") || $0.hasPrefix("retired/") },
                "\(objects.filter { !$0.hasPrefix("gen/") })")
        let keyFiles = try FileManager.default.contentsOfDirectory(atPath: box.home.appendingPathComponent("keys").path)
            .filter { $0.hasSuffix(".key") }
        #expect(keyFiles == ["\(gens.first!).key"], "the device keeps only the current key: \(keyFiles)")

        // The first key, given explicitly or held by another device, is refused with exit 12.
        let byFile = try await box.run(["snapshots", "--key-file", oldKeyFile.path])
        #expect(byFile.status == 12 && byFile.stderr.contains("replaced by a key rotation"), "\(byFile)")
        let other = try await box.run(["snapshots"], env: ["COFFER_HOME": otherHome.path])
        #expect(other.status == 12 && other.stderr.contains("replaced by a key rotation"), "\(other)")
    }
}
