import Foundation
import Testing

/// Damage done to the repository's files on disk, as a malicious or broken storage would: every
/// kind of object flipped, truncated, dropped or swapped. `check` must name the object and exit 13;
/// `restore` must never write wrong data.
@Suite struct TamperTests {
    /// A repository with two snapshots of a small tree, small packs so there are several.
    static func pristine() async throws -> (Sandbox, URL) {
        let box = try Sandbox()
        try await box.initRepository(["--pack-size", "1"])
        let data = box.path("data")
        try Fixtures.makeTree(at: data)
        try await box.backupJSON([data.path])
        try Fixtures.makeBulk(at: data.appendingPathComponent("bulk"), files: 3, size: 700_000, seed: 9)
        try await box.backupJSON([data.path])
        return (box, data)
    }

    /// Runs `damage` on a fresh copy of the repository, then expects check to fail naming `expectName`
    /// and restore to write nothing wrong.
    /// `restoreCode`: 13 (damage), or 14 when the damage makes the storage look stale (a dropped index
    /// object: the snapshot's blobs are in no index), refused before anything is written.
    static func expectDetected(_ box: Sandbox, data: URL, label: String, expectName: String?, restoreCode: Int32 = 13,
                               damage: (URL) throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let copy = box.path("repo-\(label)")
        try? FileManager.default.removeItem(at: copy)
        try FileManager.default.copyItem(at: box.repo, to: copy)
        try damage(copy)
        let env = ["COFFER_REPO": copy.path]
        let check = try await box.run(["check", "--read-data"], env: env)
        #expect(check.status == 13, "\(label): check should report damage:\n\(check)", sourceLocation: sourceLocation)
        if let expectName {
            #expect((check.stdout + check.stderr).contains(expectName), "\(label): check does not name \(expectName):\n\(check)",
                    sourceLocation: sourceLocation)
        }
        let target = box.path("restore-\(label)")
        let restore = try await box.run(["restore", "latest", "--target", target.path], env: env)
        #expect(!restore.signalled, "\(label): restore crashed:\n\(restore)", sourceLocation: sourceLocation)
        if restore.status == 0 {
            // The damaged object was not needed by the latest snapshot: then all of it must be right.
            let diffs = TreeCompare.differences(try TreeCompare.read(data), try TreeCompare.read(target.appendingPathComponent("data")))
            #expect(diffs.isEmpty, "\(label): restore succeeded with differences: \(diffs)", sourceLocation: sourceLocation)
        } else {
            #expect(restore.status == restoreCode, "\(label): restore should exit with code \(restoreCode):\n\(restore)", sourceLocation: sourceLocation)
            if restore.status == 14 {
                let written = (try? FileManager.default.contentsOfDirectory(atPath: target.path)) ?? []
                #expect(written.isEmpty, "\(label): a stale refusal must come before any file is written: \(written)", sourceLocation: sourceLocation)
            }
        }
        if restore.status != 0, FileManager.default.fileExists(atPath: target.appendingPathComponent("data").path) {
            try expectNoWrongData(original: data, restored: target.appendingPathComponent("data"), sourceLocation: sourceLocation)
        }
        try? FileManager.default.removeItem(at: copy)
        try? FileManager.default.removeItem(at: target)
    }

    static func flipByte(_ url: URL, at fraction: Double = 0.5) throws {
        var d = try Data(contentsOf: url)
        let i = min(d.count - 1, Int(Double(d.count) * fraction))
        d[i] ^= 0x40
        try d.write(to: url)
    }

    static func truncate(_ url: URL) throws {
        let d = try Data(contentsOf: url)
        try d.prefix(d.count / 2).write(to: url)
    }

    /// The id part of an object name (`data/ab/abcd...` → `abcd...`).
    static func id(_ name: String) -> String { String(name.split(separator: "/").last!) }

    @Test func flippedBytesInEveryObjectAreFoundAndNamed() async throws {
        let (box, data) = try await Self.pristine()
        let packs = box.objects("data"), indexes = box.objects("index"), snaps = box.objects("snapshots")
        #expect(packs.count >= 3, "\(packs)")
        #expect(!indexes.isEmpty && snaps.count == 2)
        for name in packs + indexes + snaps {
            for fraction in [0.0, 0.5, 0.999] {
                try await Self.expectDetected(box, data: data, label: "flip-\(Self.id(name).prefix(8))-\(Int(fraction * 1000))",
                                        expectName: Self.id(name)) { repo in
                    try Self.flipByte(repo.appendingPathComponent(name), at: fraction)
                }
            }
        }
        // The config: damage, not "wrong key", and nothing offers to recreate it.
        try await Self.expectDetected(box, data: data, label: "config", expectName: nil) { repo in
            try Self.flipByte(repo.appendingPathComponent("config"))
        }
        let copy = box.path("repo-config-msg")
        try FileManager.default.copyItem(at: box.repo, to: copy)
        try Self.flipByte(copy.appendingPathComponent("config"), at: 0.2)
        let r = try await box.run(["snapshots"], env: ["COFFER_REPO": copy.path])
        #expect(r.status == 13, "\(r)")
        #expect(!r.stderr.lowercased().contains("init"), "no error may suggest re-initialising: \(r.stderr)")
    }

    @Test func truncatedObjectsAreFoundAndNamed() async throws {
        let (box, data) = try await Self.pristine()
        for name in box.objects("data") + box.objects("index") + box.objects("snapshots") {
            try await Self.expectDetected(box, data: data, label: "trunc-\(Self.id(name).prefix(8))", expectName: Self.id(name)) { repo in
                try Self.truncate(repo.appendingPathComponent(name))
            }
        }
    }

    @Test func droppedIndexAndMissingPackAreFound() async throws {
        let (box, data) = try await Self.pristine()
        for name in box.objects("index") {
            try await Self.expectDetected(box, data: data, label: "drop-\(Self.id(name).prefix(8))", expectName: nil, restoreCode: 14) { repo in
                try FileManager.default.removeItem(at: repo.appendingPathComponent(name))
            }
        }
        for name in box.objects("data") {
            try await Self.expectDetected(box, data: data, label: "rm-\(Self.id(name).prefix(8))", expectName: Self.id(name)) { repo in
                try FileManager.default.removeItem(at: repo.appendingPathComponent(name))
            }
        }
    }

    @Test func swappedPacksAreFoundAndNamed() async throws {
        let (box, data) = try await Self.pristine()
        let packs = box.objects("data")
        try #require(packs.count >= 2)
        for (a, b) in zip(packs, packs.dropFirst()) {
            try await Self.expectDetected(box, data: data, label: "swap-\(Self.id(a).prefix(8))", expectName: Self.id(a)) { repo in
                let ua = repo.appendingPathComponent(a), ub = repo.appendingPathComponent(b)
                let da = try Data(contentsOf: ua), db = try Data(contentsOf: ub)
                try db.write(to: ua)
                try da.write(to: ub)
            }
        }
    }

    /// Damage in one pack stops only the files that need it; the others restore exactly.
    @Test func restoreSkipsOnlyDamagedFilesAndNamesTheObject() async throws {
        let (box, data) = try await Self.pristine()
        // The biggest pack holds file data (the video), not only trees.
        let packs = box.objects("data").sorted {
            (try? FileManager.default.attributesOfItem(atPath: box.repo.appendingPathComponent($0).path)[.size] as? Int) ?? 0
                > (try? FileManager.default.attributesOfItem(atPath: box.repo.appendingPathComponent($1).path)[.size] as? Int) ?? 0
        }
        let victim = try #require(packs.first)
        try Self.flipByte(box.repo.appendingPathComponent(victim), at: 0.6)
        let target = box.path("partial-restore")
        let r = try await box.run(["restore", "latest", "--target", target.path])
        #expect(r.status == 13, "\(r)")
        #expect(r.stderr.contains("could not restore"), "\(r)")
        #expect(r.stderr.contains(Self.id(victim)) || r.stderr.contains("blob"), "the failure should name the object: \(r)")
        try expectNoWrongData(original: data, restored: target.appendingPathComponent("data"))
        let restored = try TreeCompare.read(target.appendingPathComponent("data"))
        #expect(restored["docs/notes.txt"] != nil, "files in undamaged packs are restored")
    }
}
