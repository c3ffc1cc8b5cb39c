import Foundation
import Testing

/// A folder repository as iCloud Drive leaves it, through the real `coffer` binary: conflict copies
/// are named by `check` (text and `--json`) and change nothing; an object that is only a placeholder
/// (not downloaded to this device) makes the command fail with an error naming the file.
@Suite(.serialized) struct ICloudCLITests {
    @Test func checkNamesConflictCopiesAndPlaceholders() async throws {
        let box = try Sandbox()
        try await box.initRepository()
        let base = box.path("base")
        try Fixtures.makeTree(at: base)
        let snapshot = try #require(try await box.backupJSON([base.path])["snapshot_id"] as? String)
        let packs = box.objects("data")
        let pack = try #require(packs.first)

        // Two devices created the same names: iCloud kept a copy of each beside the original.
        let fm = FileManager.default
        try Data("a stranger's config".utf8).write(to: box.repo.appendingPathComponent("config 2"))
        try Data(repeating: 7, count: 1000).write(to: box.repo.appendingPathComponent(pack + " 2"))
        let copies = ["config 2", pack + " 2"].sorted()

        let json = try await box.run(["check", "--read-data", "--json"])
        #expect(json.status == 0, "conflict copies are not damage:\n\(json)")
        let report = try #require(try json.json() as? [String: Any])
        #expect(report["conflict_copies"] as? [String] == copies, "\(report)")
        #expect(report["clean"] as? Bool == true)
        let text = try await box.ok(["check"])
        #expect(text.stdout.contains("2 conflict copies made by a syncing drive"), "\(text.stdout)")
        for copy in copies { #expect(text.stdout.contains("  \(copy)"), "\(text.stdout)") }
        let restored = try await box.restore(snapshot, into: "restored")
        let diffs = TreeCompare.differences(try TreeCompare.read(base), try TreeCompare.read(restored.appendingPathComponent("base")))
        #expect(diffs.isEmpty, "conflict copies change nothing a restore reads: \(diffs.prefix(5))")

        // A pack not downloaded to this device: only its placeholder is here.
        let packURL = box.repo.appendingPathComponent(pack)
        let size = try #require(try fm.attributesOfItem(atPath: packURL.path)[.size] as? Int)
        let last = packURL.lastPathComponent
        let plist = try PropertyListSerialization.data(fromPropertyList: ["NSURLNameKey": last, "NSURLFileSizeKey": size], format: .binary, options: 0)
        let placeholder = packURL.deletingLastPathComponent().appendingPathComponent(".\(last).icloud")
        try plist.write(to: placeholder)
        try fm.removeItem(at: packURL)
        let failed = try await box.run(["check", "--read-data"])
        #expect(failed.status != 0, "\(failed)")
        #expect((failed.stdout + failed.stderr).contains(".\(last).icloud"), "the error names the placeholder:\n\(failed)")
        #expect((failed.stdout + failed.stderr).contains("iCloud Drive placeholder"), "\(failed)")
        #expect(!(failed.stdout + failed.stderr).contains("missing: \(pack)"), "a placeholder is not a missing pack:\n\(failed)")
    }
}
