import Foundation
import Testing

/// Real crashes while the device's index cache is written: `kill -9` of `coffer debug-scale open`
/// at random moments of a first build (batches, merge, manifest) and of an incremental update.
/// After each, the next open succeeds with every blob indexed, and the real snapshot restores.
@Suite(.serialized) struct IndexCacheCrashTests {
    static let env = ["COFFER_ENABLE_DEBUG_COMMANDS": "1"]

    static func blobs(_ r: RunResult) -> Int? {
        guard let line = r.stdout.split(separator: "\n").first(where: { $0.hasPrefix("runs ") }) else { return nil }
        let f = line.split(separator: " ")
        guard let i = f.firstIndex(of: "blobs"), i + 1 < f.count else { return nil }
        return Int(f[i + 1])
    }

    @Test func killedWhileWritingTheIndexCacheLeavesAValidCacheOrNone() async throws {
        let box = try Sandbox()
        try await box.initRepository()
        let data = box.path("data")
        try Fixtures.makeTree(at: data)
        let snap = try #require(try await box.backupJSON([data.path])["snapshot_id"] as? String)
        let tree = try TreeCompare.read(data)
        try await box.ok(["debug-scale", "synthesize", "--blobs", "100000", "--per-object", "10000", "--seed", "1"], env: Self.env)
        let cache = box.home.appendingPathComponent("cache")

        // How long a first build takes here.
        let t0 = Date()
        let full = try await box.ok(["debug-scale", "open", "--probe", "1000"], env: Self.env)
        let duration = Date().timeIntervalSince(t0)
        var expected = try #require(Self.blobs(full))
        #expect(expected >= 100_000)

        // First, a kill at each step of the cache's write order, in a first build and in an
        // incremental update: every one must land, and the next open must see every blob.
        var round = 0
        for point in ["index-cache-temporary", "index-cache-run", "index-cache-manifest"] {
            for incremental in [false, true] {
                round += 1
                if incremental {
                    try await box.ok(["debug-scale", "synthesize", "--blobs", "5000", "--seed", "\(200 + round)"], env: Self.env)
                    expected += 5000
                } else {
                    try? FileManager.default.removeItem(at: cache)
                }
                var env = Self.env
                env["COFFER_TEST_CRASH_AT"] = point
                let r = try await box.run(["debug-scale", "open"], env: env)
                #expect(r.signalled, "\(point) (\(incremental ? "incremental" : "first build")) was never reached: \(r)")
                let after = try await box.ok(["debug-scale", "open", "--probe", "1000"], env: Self.env)
                #expect(Self.blobs(after) == expected, "after a kill at \(point): \(after)")
            }
        }

        // Then kills at random moments (whether each lands depends on the machine; what follows
        // each one is checked the same way).
        var killed = 0
        let start = Date()
        while round < 12 && Date().timeIntervalSince(start) < 20 {
            round += 1
            if round % 2 == 1 {
                try? FileManager.default.removeItem(at: cache)  // a first build
            } else {
                // An incremental update: a new index object to merge in.
                try await box.ok(["debug-scale", "synthesize", "--blobs", "5000", "--seed", "\(100 + round)"], env: Self.env)
                expected += 5000
            }
            let r = try await box.run(["debug-scale", "open"], env: Self.env, killAfter: Double.random(in: 0.05..<max(0.1, duration)))
            if r.signalled { killed += 1 } else { #expect(r.status == 0, "\(r)") }
            let after = try await box.ok(["debug-scale", "open", "--probe", "1000"], env: Self.env)
            #expect(Self.blobs(after) == expected, "round \(round): \(after)")
        }
        print("index cache: \(killed) random kills landed, besides the 6 injected ones")
        let target = try await box.restore(snap, into: "verify")
        #expect(TreeCompare.differences(tree, try TreeCompare.read(target.appendingPathComponent("data"))).isEmpty)
    }
}
