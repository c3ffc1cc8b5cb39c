import Foundation
import Testing

/// `coffer repair index` and `coffer repair snapshots` (issue 12, problem 2): after packs are
/// damaged, a repository must not stay stuck. Before: `backup --force` stored nothing (the damaged
/// blobs were still indexed), `restore` kept failing and `prune` refused.
@Suite struct RepairTests {
    /// Flips one byte of a pack's blob region (FORMAT.md: blobs from offset 0, then the encrypted
    /// header of H bytes, then the 44-byte trailer whose bytes 36..<40 hold H, big-endian): byte 100,
    /// or the middle of the blob region when the blobs are shorter than 200 bytes. A fixed offset of
    /// 100 landed in the header of a pack of small tree blobs (CI, stop 22), so every blob of that pack
    /// was salvaged through the index and the pack lost nothing.
    static func flip(_ url: URL) throws {
        var d = try Data(contentsOf: url)
        let t = d.count - 44
        let h = d[(t + 36)..<(t + 40)].reduce(0) { $0 << 8 | Int($1) }
        let blobs = t - h
        precondition(blobs > 0, "\(url.lastPathComponent) has no blob region")
        d[min(100, blobs / 2)] ^= 0x5a
        try d.write(to: url)
    }

    /// A repository of small packs holding one backup of `data`: a tree plus eight 700 kB files.
    static func repository(_ name: String = #function) async throws -> (Sandbox, URL, String) {
        let box = try Sandbox(name)
        try await box.initRepository(["--pack-size", "1"])
        let data = box.path("data")
        try Fixtures.makeTree(at: data)
        try Fixtures.makeBulk(at: data.appendingPathComponent("bulk"), files: 8, size: 700_000, seed: 12)
        let id = try #require(try await box.backupJSON([data.path])["snapshot_id"] as? String)
        return (box, data, id)
    }

    @Test func damagedPacksAreUploadedAgainAfterRepairIndex() async throws {
        let (box, data, first) = try await Self.repository()
        let packs = box.objects("data")
        #expect(packs.count >= 6, "\(packs)")
        let damaged = Array(packs.prefix(4))
        for name in damaged { try Self.flip(box.repo.appendingPathComponent(name)) }

        // What was broken: the damaged blobs are still indexed, so a forced backup stores nothing
        // again and the new snapshot cannot be restored either.
        let forced = try await box.backupJSON([data.path], extra: ["--force"])
        #expect(forced["bytes_new"] as? Int == 0, "\(forced)")
        let before = try await box.run(["restore", "latest", "--target", box.path("before").path])
        #expect(before.status == 13, "\(before)")

        let repair = try #require(try await box.ok(["repair", "index", "--json"]).json() as? [String: Any])
        #expect(Set(repair["damaged_packs"] as? [String] ?? []) == Set(damaged), "\(repair)")
        #expect((repair["blobs_lost"] as? Int ?? 0) >= 4, "\(repair)")
        #expect(repair["packs_indexed"] as? Int == packs.count - 4, "\(repair)")
        // The damaged packs are now condemned: check names the blobs the snapshots miss.
        let missing = try await box.run(["check"])
        #expect(missing.status == 13 && missing.stdout.contains("missing"), "\(missing)")

        // A backup uploads the lost blobs again (the unchanged-file shortcut does not apply to
        // files whose chunks are gone), and every snapshot restores.
        let next = try await box.backupJSON([data.path])
        #expect((next["bytes_new"] as? Int ?? 0) >= 4 * 700_000 / 2, "\(next)")
        let truth = try TreeCompare.read(data)
        for snapshot in [first, "latest"] {
            let target = try await box.restore(snapshot, into: "after-\(snapshot.prefix(6))")
            let diffs = TreeCompare.differences(truth, try TreeCompare.read(target.appendingPathComponent("data")))
            #expect(diffs.isEmpty, "\(snapshot): \(diffs.prefix(5))")
        }
        let check = try await box.run(["check", "--read-data"])
        #expect(check.status == 0, "\(check)")

        // prune deletes the damaged packs.
        try await box.ok(["prune", "--now"])
        let left = Set(box.objects("data"))
        #expect(left.isDisjoint(with: damaged), "damaged packs left after prune: \(left.intersection(damaged))")
        let final = try await box.run(["check", "--read-data"])
        #expect(final.status == 0, "\(final)")
    }

    @Test func repairSnapshotsDropsTheLostFilesSoTheRestRestores() async throws {
        let (box, data, first) = try await Self.repository()
        let truth = try TreeCompare.read(data)
        let packs = box.objects("data")
        let damaged = [packs[1], packs[packs.count / 2]]
        for name in damaged { try Self.flip(box.repo.appendingPathComponent(name)) }
        // The sources are gone too: what the damaged packs held cannot be uploaded again.
        try FileManager.default.removeItem(at: data)
        let stuck = try await box.run(["restore", "latest", "--target", box.path("before").path])
        #expect(stuck.status == 13, "\(stuck)")

        try await box.ok(["repair", "index"])
        let dry = try #require(try await box.ok(["repair", "snapshots", "--dry-run", "--json"]).json() as? [String: Any])
        let planned = try #require(dry["repaired"] as? [[String: Any]])
        #expect(planned.count == 1 && planned.first?["new_id"] == nil, "\(dry)")
        #expect(try await box.snapshotIDs() == [first], "a dry run changed the snapshots")

        let r = try #require(try await box.ok(["repair", "snapshots", "--json"]).json() as? [String: Any])
        let repaired = try #require((r["repaired"] as? [[String: Any]])?.first, "\(r)")
        let lost = try #require(repaired["lost"] as? [String])
        #expect(!lost.isEmpty && lost == planned.first?["lost"] as? [String], "\(r)")
        let newID = try #require(repaired["new_id"] as? String)
        #expect(try await box.snapshotIDs() == [newID], "the old snapshot should be replaced")
        let listed = try #require(try await box.ok(["snapshots", "--json"]).json() as? [[String: Any]])
        #expect((listed.first?["tags"] as? [String])?.contains("repaired") == true, "\(listed)")

        // The new snapshot restores completely (exit 0): every file not listed as lost, byte for byte.
        let target = try await box.restore("latest", into: "restored")
        let restored = try TreeCompare.read(target.appendingPathComponent("data"))
        let lostFiles = Set(lost.filter { !$0.hasSuffix("/") }.map { String($0.dropFirst("data/".count)) })
        for (path, entry) in truth {
            if lostFiles.contains(path) {
                #expect(restored[path] == nil, "\(path) is listed as lost but was restored")
            } else if case .file = entry.kind, !lost.contains(where: { $0.hasSuffix("/") && ("data/" + path).hasPrefix($0) }) {
                #expect(restored[path] == entry, "\(path) was not lost but does not restore identically")
            }
        }
        let check = try await box.run(["check", "--read-data"])
        #expect(check.status == 0, "\(check)")
        // And prune works again.
        try await box.ok(["prune", "--now"])
        let final = try await box.run(["check", "--read-data"])
        #expect(final.status == 0, "\(final)")
    }

    /// A crash at either commit step of a repair leaves a repository that the same command,
    /// run again, finishes: no damaged pack trusted again, no duplicate snapshot.
    @Test func crashedRepairsFinishWhenRunAgain() async throws {
        let (box, data, _) = try await Self.repository()
        let truth = try TreeCompare.read(data)
        let packs = box.objects("data")
        let damaged = [packs[0], packs[packs.count - 1]]
        for name in damaged { try Self.flip(box.repo.appendingPathComponent(name)) }

        let crashed = try await box.run(["repair", "index"], env: ["COFFER_TEST_CRASH_AT": "repair-indexed"])
        #expect(crashed.signalled, "repair index never reached its index write:\n\(crashed)")
        #expect(box.objects("marks").count == 1, "the mark condemning the damaged packs comes first")
        let again = try #require(try await box.ok(["repair", "index", "--json"]).json() as? [String: Any])
        #expect((again["damaged_packs"] as? [String] ?? []).isEmpty, "the damaged packs are condemned already: \(again)")
        #expect(box.objects("index").count == 1, "\(box.objects("index"))")
        // A backup makes everything whole again (the sources still exist).
        try await box.backupJSON([data.path])
        #expect(try await box.run(["check", "--read-data"]).status == 0)

        // Now lose data for good and crash repair snapshots between its write and its delete.
        try await box.ok(["prune", "--now"])  // the condemned packs go: every pack left is needed
        for name in box.objects("data").prefix(2) { try Self.flip(box.repo.appendingPathComponent(name)) }
        try FileManager.default.removeItem(at: data)
        try await box.ok(["repair", "index"])
        let before = try await box.snapshotIDs()
        let crashed2 = try await box.run(["repair", "snapshots"], env: ["COFFER_TEST_CRASH_AT": "repair-snapshot"])
        #expect(crashed2.signalled, "repair snapshots never wrote a snapshot:\n\(crashed2)")
        #expect(try await box.snapshotIDs().count == before.count + 1, "the new snapshot is written before the old one is removed")
        let r = try #require(try await box.ok(["repair", "snapshots", "--json"]).json() as? [String: Any])
        let repaired = try #require(r["repaired"] as? [[String: Any]])
        #expect(repaired.count == before.count, "\(r)")
        let after = try await box.snapshotIDs()
        #expect(after.count == before.count && Set(after).isDisjoint(with: before), "\(before) -> \(after)")
        let third = try #require(try await box.ok(["repair", "snapshots", "--json"]).json() as? [String: Any])
        #expect((third["repaired"] as? [[String: Any]])?.isEmpty == true, "nothing is left to repair: \(third)")
        let target = try await box.restore("latest", into: "restored")
        for (path, entry) in try TreeCompare.read(target.appendingPathComponent("data")) {
            guard case .file = entry.kind else { continue }
            #expect(truth[path] == entry, "\(path) restored differently")
        }
        let check = try await box.run(["check", "--read-data"])
        #expect(check.status == 0, "\(check)")
    }
}
