import Foundation
import Testing

/// `coffer forget` as a restic user runs it: groups, reasons, ids, unknown options, and the exact
/// bytes `forget --prune` and `prune` free, measured on the repository folder.
@Suite struct ForgetCLITests {
    /// Issue 12, problem 1: `forget --keep-last 1` after a backup of another path, or from another
    /// --host, keeps that path's (host's) only snapshot.
    @Test func keepLastKeepsOtherPathsAndHosts() async throws {
        let box = try Sandbox()
        try await box.initRepository()
        for dir in ["docs", "photos"] {
            try FileManager.default.createDirectory(at: box.path(dir), withIntermediateDirectories: true)
            try Data(dir.utf8).write(to: box.path("\(dir)/f.txt"))
        }
        let photos = try #require(try await box.backupJSON([box.path("photos").path])["snapshot_id"] as? String)
        let otherHost = try #require(try await box.backupJSON([box.path("docs").path], extra: ["--host", "other-machine"])["snapshot_id"] as? String)
        let docs1 = try #require(try await box.backupJSON([box.path("docs").path])["snapshot_id"] as? String)
        let docs2 = try #require(try await box.backupJSON([box.path("docs").path])["snapshot_id"] as? String)

        // Dry run: per group, the reasons; nothing removed.
        let dry = try await box.ok(["forget", "--keep-last", "1", "--dry-run"]).stdout
        #expect(dry.contains("snapshots for (host [other-machine], paths [\(box.path("docs").path)])"), "\(dry)")
        #expect(dry.contains("last snapshot"), "\(dry)")
        #expect(dry.contains("newest of its device"), "\(dry)")
        #expect(dry.contains("would remove 1 snapshot:\n\(docs1.prefix(8))"), "\(dry)")
        #expect(try await box.snapshotIDs().count == 4)

        let r = try #require(try await box.ok(["forget", "--keep-last", "1", "--json"]).json() as? [String: Any])
        #expect((r["removed"] as? [[String: Any]])?.compactMap { $0["id"] as? String } == [docs1])
        #expect(Set(try await box.snapshotIDs()) == [photos, otherHost, docs2])
        let groups = try #require(r["groups"] as? [[String: Any]])
        #expect(groups.count == 3)
        let reasons = groups.flatMap { $0["reasons"] as? [[String: Any]] ?? [] }
        #expect(reasons.contains { ($0["snapshot"] as? [String: Any])?["id"] as? String == photos
                && ($0["matches"] as? [String]) == ["last snapshot"] })
        #expect((r["bytes_freed"] as? Int ?? 0) > 0)

        // Filters: only the other host's group is considered.
        try await box.backupJSON([box.path("docs").path], extra: ["--host", "other-machine", "--tag", "t1"])
        let filtered = try #require(try await box.ok(["forget", "--host", "other-machine", "--keep-last", "1", "--group-by", "host", "--json"]).json() as? [String: Any])
        #expect((filtered["removed"] as? [[String: Any]])?.compactMap { $0["id"] as? String } == [otherHost])
        let left = Set(try await box.snapshotIDs())
        #expect(left.isSuperset(of: [photos, docs2]) && !left.contains(otherHost))
        #expect(try await box.snapshotIDs().count == 3)
    }

    @Test func unknownOptionsIdsAndUsage() async throws {
        let box = try Sandbox()
        try await box.initRepository()
        try FileManager.default.createDirectory(at: box.path("d"), withIntermediateDirectories: true)
        try Data("x".utf8).write(to: box.path("d/f"))
        var ids: [String] = []
        for _ in 0..<3 { ids.append(try #require(try await box.backupJSON([box.path("d").path])["snapshot_id"] as? String)) }

        // An unknown option is named as unknown, not hidden behind "give at least one rule".
        let unknown = try await box.run(["forget", "--keep-foo", "3"])
        #expect(unknown.status == 64)
        #expect(unknown.stderr.contains("Unknown option '--keep-foo'"), "\(unknown)")
        let alone = try await box.run(["forget", "--keep-bar"])
        #expect(alone.status == 64)
        #expect(alone.stderr.contains("Unknown option '--keep-bar'"), "\(alone)")
        let none = try await box.run(["forget"])
        #expect(none.status == 64)
        #expect(none.stderr.contains("give at least one rule"), "\(none)")
        #expect(try await box.run(["forget", "--keep-within", "7x"]).status == 64)
        #expect(try await box.run(["forget", "--keep-last", "1", "--group-by", "hostname"]).status == 64)
        #expect(try await box.run(["forget", "--keep-last", "1", String(ids[0].prefix(8))]).status == 64)

        // Ids: the newest of the device is refused (nothing removed), older ones go.
        let newest = try await box.run(["forget", String(ids[2].prefix(8)), String(ids[0].prefix(8))])
        #expect(newest.status == 64, "\(newest)")
        #expect(newest.stderr.contains("newest snapshot of the device"), "\(newest)")
        #expect(try await box.snapshotIDs().count == 3)
        let byID = try await box.ok(["forget", String(ids[0].prefix(8)), String(ids[1].prefix(10))])
        #expect(byID.stdout.contains("remove 2 snapshots"), "\(byID)")
        #expect(try await box.snapshotIDs() == [ids[2]])
    }

    /// Issue 12, problem 5: the bytes `forget --prune` and `prune` report freed are the stored bytes
    /// that went, measured as the files that left the repository folder.
    @Test func bytesFreedAreTheBytesThatWent() async throws {
        let box = try Sandbox()
        try await box.initRepository()
        let src = box.path("src")
        try FileManager.default.createDirectory(at: src, withIntermediateDirectories: true)
        var seed: UInt64 = 7
        func random(_ n: Int) -> Data {
            var bytes = [UInt8](repeating: 0, count: n)
            for i in 0..<n { seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17; bytes[i] = UInt8(truncatingIfNeeded: seed) }
            return Data(bytes)
        }
        try random(8_000_000).write(to: src.appendingPathComponent("big.bin"))
        try random(300_000).write(to: src.appendingPathComponent("small.bin"))
        try await box.backupJSON([src.path])
        try FileManager.default.removeItem(at: src.appendingPathComponent("big.bin"))
        try await box.backupJSON([src.path])

        // forget --prune, two-phase with no grace: this run marks (and deletes the superseded index
        // objects and the forgotten snapshot); the next prune deletes the marked packs.
        var before = Self.files(box.repo)
        let first = try #require(try await box.ok(["forget", "--keep-last", "1", "--prune", "--grace", "0s", "--json"]).json() as? [String: Any])
        var went = Self.gone(before, Self.files(box.repo))
        let prune1 = try #require(first["prune"] as? [String: Any])
        #expect((first["bytes_freed"] as? Int ?? -1) + (prune1["bytes_freed"] as? Int ?? -1) == went, "\(first)")
        #expect(went > 0)

        before = Self.files(box.repo)
        let second = try #require(try await box.ok(["prune", "--grace", "0s", "--json"]).json() as? [String: Any])
        went = Self.gone(before, Self.files(box.repo))
        #expect(second["bytes_freed"] as? Int == went, "\(second)")
        #expect(went >= 8_000_000, "the big file's packs went")

        // forget --prune --now: one run, snapshot and data.
        try random(5_000_000).write(to: src.appendingPathComponent("big2.bin"))
        try await box.backupJSON([src.path])
        try FileManager.default.removeItem(at: src.appendingPathComponent("big2.bin"))
        try await box.backupJSON([src.path])
        before = Self.files(box.repo)
        let now = try #require(try await box.ok(["forget", "--keep-last", "1", "--prune", "--now", "--json"]).json() as? [String: Any])
        went = Self.gone(before, Self.files(box.repo))
        #expect(went >= 5_000_000)
        let prune3 = try #require(now["prune"] as? [String: Any])
        #expect((now["bytes_freed"] as? Int ?? -1) + (prune3["bytes_freed"] as? Int ?? -1) == went, "\(now)")
        #expect(try await box.ok(["check", "--read-data"]).status == 0)
    }

    /// Regular files under `root` with their sizes.
    static func files(_ root: URL) -> [String: Int] {
        var out: [String: Int] = [:]
        guard let e = FileManager.default.enumerator(atPath: root.path) else { return out }
        for case let rel as String in e {
            let attrs = try? FileManager.default.attributesOfItem(atPath: root.appendingPathComponent(rel).path)
            if attrs?[.type] as? FileAttributeType == .typeRegular { out[rel] = (attrs?[.size] as? NSNumber)?.intValue ?? 0 }
        }
        return out
    }

    /// Bytes of the files in `before` that are not in `after`.
    static func gone(_ before: [String: Int], _ after: [String: Int]) -> Int {
        before.filter { after[$0.key] == nil }.values.reduce(0, +)
    }
}
