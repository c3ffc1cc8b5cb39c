import CofferS3
import CofferStorage
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Two writers (two COFFER_HOME, one key) and a pruner, interleaved with real processes: writer B's
/// `coffer backup` stops itself with SIGSTOP after it loaded the index and uploaded some packs
/// (`COFFER_TEST_STOP_AFTER_PACKS`), prunes in other processes mark and, after the grace period on
/// the storage's clock, delete what B deduplicated against and what B had uploaded, then SIGCONT.
/// B must finish, `check --read-data` must be clean, and every snapshot must restore identically.
/// Run on a local folder and on S3 (moto) with conditional creates.
@Suite(.serialized) struct SeveralWritersTests {
    @Test("two writers and a pruner on a local folder; a backup suspended past the grace period still commits a whole snapshot")
    func localFolder() async throws {
        let scenario = try WritersScenario(repository: nil, extraEnvironment: [:])
        defer { scenario.remove() }
        let key = try await offPool { try scenario.run() }
        try await offPool { try scenario.runSourceChanged(key: key) }
    }

    @Test("two writers and a pruner on S3 (moto, If-None-Match creates); a suspended backup still commits a whole snapshot")
    func s3() async throws {
        try await MotoServer.with { moto in
            try await S3Storage.with(moto.configuration(bucket: "coffer-writers")) { try await $0.createBucket() }
            let env = [
                "AWS_ENDPOINT_URL": moto.endpoint, "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_ACCESS_KEY_ID": moto.credentials.accessKeyID, "AWS_SECRET_ACCESS_KEY": moto.credentials.secretAccessKey,
            ]
            let scenario = try WritersScenario(repository: "s3://coffer-writers/shared", extraEnvironment: env)
            defer { scenario.remove() }
            _ = try await offPool { try scenario.run() }
        }
    }
}

struct WritersScenario {
    let root: URL
    let repository: String
    let base: [String: String]
    /// Short, so the test is quick; above 2 × (CommitCheck's 1 s gap + the 1 s resolution of S3 timestamps).
    static let grace = 5.0

    init(repository: String?, extraEnvironment: [String: String]) throws {
        guard FileManager.default.isExecutableFile(atPath: CofferWorld.binary.path) else { throw CofferWorld.BinaryMissing() }
        root = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-writers-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        self.repository = repository ?? root.appendingPathComponent("repo").path
        var env = ProcessInfo.processInfo.environment
        for key in env.keys where key.hasPrefix("AWS_") || key.hasPrefix("COFFER_") { env[key] = nil }
        env["AWS_CONFIG_FILE"] = root.appendingPathComponent("no-aws-config").path
        env["AWS_SHARED_CREDENTIALS_FILE"] = root.appendingPathComponent("no-aws-credentials").path
        env["COFFER_REPO"] = self.repository
        for (k, v) in extraEnvironment { env[k] = v }
        base = env
    }

    func remove() { try? FileManager.default.removeItem(at: root) }

    func path(_ rel: String) -> URL { root.appendingPathComponent(rel) }

    func environment(_ writer: String, key: String?, _ extra: [String: String] = [:]) -> [String: String] {
        var env = base
        env["COFFER_HOME"] = path("home-\(writer)").path
        if let key { env["COFFER_KEY"] = key }
        for (k, v) in extra { env[k] = v }
        return env
    }

    @discardableResult
    func coffer(_ env: [String: String], _ args: [String]) throws -> String {
        try runSplitBlocking(CofferWorld.binary.path, args, env)
    }

    func json(_ env: [String: String], _ args: [String]) throws -> [String: Any] {
        let out = try coffer(env, args + ["--json"])
        return try #require(try JSONSerialization.jsonObject(with: Data((out.split(separator: "\n").last ?? "").utf8)) as? [String: Any], "\(args) printed: \(out)")
    }

    func write(_ rel: String, _ data: Data) throws {
        let url = path(rel)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try data.write(to: url)
    }

    static func random(_ count: Int, seed: UInt64) -> Data {
        var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        var out = Data(count: count)
        out.withUnsafeMutableBytes { buf in
            let words = buf.bindMemory(to: UInt64.self)
            for i in 0..<words.count {
                state = state &+ 0x9E37_79B9_7F4A_7C15
                var z = state
                z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
                z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
                words[i] = z ^ (z >> 31)
            }
        }
        return out
    }

    /// Every regular file under `dir`, by relative path.
    static func files(_ dir: URL) -> [String: Data] {
        var out: [String: Data] = [:]
        guard let e = FileManager.default.enumerator(atPath: dir.path) else { return out }
        for case let rel as String in e {
            var isDir: ObjCBool = false
            let full = dir.appendingPathComponent(rel).path
            if FileManager.default.fileExists(atPath: full, isDirectory: &isDir), !isDir.boolValue {
                out[rel] = FileManager.default.contents(atPath: full)
            }
        }
        return out
    }

    /// Starts `coffer backup` that stops itself after `packs` uploads; returns once it is stopped.
    func startSuspendedBackup(_ env: [String: String], _ args: [String], packs: Int) throws -> (Process, URL, URL) {
        var env = env
        env["COFFER_TEST_STOP_AFTER_PACKS"] = "\(packs)"
        let out = path("backup-out-\(UUID().uuidString.prefix(6))"), err = path("backup-err-\(UUID().uuidString.prefix(6))")
        _ = FileManager.default.createFile(atPath: out.path, contents: nil)
        _ = FileManager.default.createFile(atPath: err.path, contents: nil)
        let p = Process()
        p.executableURL = CofferWorld.binary
        p.arguments = args
        p.environment = env
        p.standardOutput = try FileHandle(forWritingTo: out)
        p.standardError = try FileHandle(forWritingTo: err)
        p.standardInput = FileHandle.nullDevice
        try p.run()
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            if Self.isStopped(p.processIdentifier) { return (p, out, err) }
            if !p.isRunning {
                let text = (try? String(contentsOf: err, encoding: .utf8)) ?? ""
                throw ScenarioFailed(description: "the backup ended before it stopped itself (status \(p.terminationStatus)): \(text)")
            }
            usleep(10_000)
        }
        kill(p.processIdentifier, SIGKILL)
        throw ScenarioFailed(description: "the backup did not stop itself within 60 s")
    }

    static func isStopped(_ pid: Int32) -> Bool {
        if let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
           let close = stat.lastIndex(of: ")") {
            let state = stat[stat.index(close, offsetBy: 2)...].prefix(1)
            return state == "T" || state == "t"
        }
        // No /proc (Apple platforms): ask ps.
        let ps = (try? runSplitBlocking("/bin/ps", ["-o", "stat=", "-p", "\(pid)"], ProcessInfo.processInfo.environment, allowFailure: true)) ?? ""
        return ps.trimmingCharacters(in: .whitespacesAndNewlines).hasPrefix("T")
    }

    func resume(_ p: Process, out: URL, err: URL) throws -> [String: Any] {
        kill(p.processIdentifier, SIGCONT)
        p.waitUntilExit()
        let stdout = (try? String(contentsOf: out, encoding: .utf8)) ?? ""
        let stderr = (try? String(contentsOf: err, encoding: .utf8)) ?? ""
        guard p.terminationStatus == 0, p.terminationReason == .exit else {
            throw ScenarioFailed(description: "the resumed backup failed (\(p.terminationStatus)):\n\(stdout.suffix(1500))\n\(stderr.suffix(1500))")
        }
        return try #require(try JSONSerialization.jsonObject(with: Data((stdout.split(separator: "\n").last ?? "").utf8)) as? [String: Any], "backup printed: \(stdout)")
    }

    struct ScenarioFailed: Error, CustomStringConvertible { var description: String }

    func prune(_ env: [String: String]) throws -> [String: Any] {
        try json(env, ["prune", "--grace", "\(Int(Self.grace))s"])
    }

    func waitGrace() { usleep(useconds_t((Self.grace + 1.2) * 1_000_000)) }

    func expectClean(_ env: [String: String], _ what: String) throws {
        let out = try runSplitBlocking(CofferWorld.binary.path, ["check", "--read-data", "--json"], env, allowFailure: true)
        let check = try #require(try JSONSerialization.jsonObject(with: Data((out.split(separator: "\n").last ?? "").utf8)) as? [String: Any], "check printed: \(out)")
        #expect(check["clean"] as? Bool == true, "\(what): check --read-data is not clean: \(check)")
    }

    func expectRestores(_ env: [String: String], _ snapshot: String, _ expected: [String: Data], folder: String, _ what: String) throws {
        let target = path("restore-\(UUID().uuidString.prefix(6))")
        try coffer(env, ["restore", snapshot, "--target", target.path, "--quiet"])
        let got = Self.files(target.appendingPathComponent(folder))
        #expect(got.keys.sorted() == expected.keys.sorted(), "\(what): restored files differ: \(got.keys.sorted()) vs \(expected.keys.sorted())")
        for (rel, data) in expected { #expect(got[rel] == data, "\(what): \(rel) restored with wrong content") }
        try? FileManager.default.removeItem(at: target)
    }

    @discardableResult
    func run() throws -> String {
        let envA0 = environment("a", key: nil)
        let initOut = try coffer(envA0, ["init", "--pack-size", "1"])
        var key: String?
        for line in initOut.split(separator: "\n") {
            let groups = line.split(separator: " ")
            if groups.count == 16, groups.allSatisfy({ $0.count == 4 && $0.allSatisfy(\.isHexDigit) }) { key = groups.joined() }
        }
        let digits = try #require(key, "init printed no key: \(initOut)")
        let envA = environment("a", key: digits), envB = environment("b", key: digits)
        let srcA = path("src/phone-a"), srcB = path("src/tablet-b")

        // Phase 1. A backs up a file that B also holds (B will deduplicate against A's packs).
        let shared = Self.random(3 << 20, seed: 1)
        try write("src/phone-a/shared.bin", shared)
        try write("src/phone-a/a-only.bin", Self.random(1 << 20, seed: 2))
        try write("src/tablet-b/copy-of-shared.bin", shared)
        for i in 0..<5 { try write("src/tablet-b/bulk/b-\(i).bin", Self.random(1 << 20, seed: 10 + UInt64(i))) }
        let a1 = try json(envA, ["backup", "--quiet", srcA.path])
        #expect(a1["blobs_new"] as? Int ?? 0 >= 4)

        // B loads the index (the shared blobs are live in A's packs), uploads 2 packs, stops.
        let (b, bOut, bErr) = try startSuspendedBackup(envB, ["backup", "--json", "--quiet", "--checkpoint-mib", "1", srcB.path], packs: 2)
        let expectedB1 = Self.files(srcB)

        // Meanwhile A drops the shared file; the forgotten snapshot's packs are marked, as are
        // B's indexed packs (no snapshot needs them yet).
        try FileManager.default.removeItem(at: srcA.appendingPathComponent("shared.bin"))
        let a2 = try json(envA, ["backup", "--quiet", srcA.path])
        let expectedA2 = Self.files(srcA)
        try coffer(envA, ["forget", "--keep-last", "1"])
        let p1 = try prune(envA)
        #expect(p1["objects_marked"] as? Int ?? 0 >= 2, "the first prune should mark A's old packs and B's unneeded ones: \(p1)")
        // After the grace period: deleted (B is still stopped); B's unindexed packs get marked.
        waitGrace()
        let p2 = try prune(envA)
        #expect(p2["objects_deleted"] as? Int ?? 0 >= 2, "the second prune should delete what the first marked: \(p2)")
        #expect(b.isRunning && Self.isStopped(b.processIdentifier), "B stayed suspended through both prunes")

        // B resumes, past the grace period: it must upload again what is gone or marked, then commit.
        let b1 = try resume(b, out: bOut, err: bErr)
        #expect(b1["blobs_uploaded_again"] as? Int ?? 0 >= 3, "B must have uploaded the shared blobs again: \(b1)")
        try expectClean(envA, "after the suspended backup committed")
        let b1ID = try #require(b1["snapshot_id"] as? String)
        try expectRestores(envA, b1ID, expectedB1, folder: "tablet-b", "B's snapshot made while suspended")
        try expectRestores(envB, try #require(a2["snapshot_id"] as? String), expectedA2, folder: "phone-a", "A's snapshot")

        // Phase 2. B deduplicates against A's a-only.bin; A drops it; the prune marks its pack; B
        // resumes within the grace period and copies the blobs out of the marked pack.
        let aOnly = try #require(FileManager.default.contents(atPath: srcA.appendingPathComponent("a-only.bin").path))
        try write("src/tablet-b/copy-of-a-only.bin", aOnly)
        try write("src/tablet-b/new.bin", Self.random(2 << 20, seed: 30))
        let (b2p, b2Out, b2Err) = try startSuspendedBackup(envB, ["backup", "--json", "--quiet", "--checkpoint-mib", "1", srcB.path], packs: 1)
        let expectedB2 = Self.files(srcB)
        try FileManager.default.removeItem(at: srcA.appendingPathComponent("a-only.bin"))
        try write("src/phone-a/later.bin", Self.random(100_000, seed: 40))
        let a3 = try json(envA, ["backup", "--quiet", srcA.path])
        let expectedA3 = Self.files(srcA)
        try coffer(envA, ["forget", "--keep-last", "1"])
        let p3 = try prune(envA)
        #expect(p3["objects_marked"] as? Int ?? 0 >= 1, "\(p3)")
        let b2 = try resume(b2p, out: b2Out, err: b2Err)
        #expect(b2["blobs_uploaded_again"] as? Int ?? 0 >= 1, "B must have copied the marked blobs: \(b2)")
        try expectClean(envB, "after the second suspended backup")

        // The marks come due: everything marked goes, and every snapshot still restores.
        waitGrace()
        let p4 = try prune(envB)
        #expect(p4["objects_deleted"] as? Int ?? 0 >= 1, "\(p4)")
        try expectClean(envA, "after the final prune")
        try expectRestores(envA, b1ID, expectedB1, folder: "tablet-b", "B's first snapshot after the final prune")
        try expectRestores(envA, try #require(b2["snapshot_id"] as? String), expectedB2, folder: "tablet-b", "B's second snapshot")
        try expectRestores(envB, try #require(a3["snapshot_id"] as? String), expectedA3, folder: "phone-a", "A's newest snapshot")
        return digits
    }

    func snapshotCount(_ env: [String: String]) throws -> Int {
        let out = try coffer(env, ["snapshots", "--json"])
        return try #require(try JSONSerialization.jsonObject(with: Data((out.split(separator: "\n").last ?? "").utf8)) as? [Any], "snapshots printed: \(out)").count
    }

    /// Phase 3: what B uploaded before it was suspended is deleted, and the file it came from
    /// changes meanwhile: nothing can restore those blobs, so B must fail without writing a
    /// snapshot ("run the backup again"), leave the repository clean, and succeed when run again.
    func runSourceChanged(key digits: String) throws {
        let envA = environment("a", key: digits), envB = environment("b", key: digits)
        let srcB = path("src/tablet-b")
        let before = try snapshotCount(envA)
        try write("src/tablet-b/changing.bin", Self.random(2 << 20, seed: 50))
        let (b, bOut, bErr) = try startSuspendedBackup(envB, ["backup", "--json", "--quiet", "--checkpoint-mib", "1", srcB.path], packs: 1)
        let p1 = try prune(envA)
        #expect(p1["objects_marked"] as? Int ?? 0 >= 1, "B's indexed pack is needed by no snapshot yet: \(p1)")
        waitGrace()
        let p2 = try prune(envA)
        #expect(p2["objects_deleted"] as? Int ?? 0 >= 1, "\(p2)")
        try write("src/tablet-b/changing.bin", Self.random(2 << 20, seed: 51))
        kill(b.processIdentifier, SIGCONT)
        b.waitUntilExit()
        let stderr = (try? String(contentsOf: bErr, encoding: .utf8)) ?? ""
        let stdout = (try? String(contentsOf: bOut, encoding: .utf8)) ?? ""
        #expect(b.terminationStatus == 13, "the backup must fail (missing data, exit 13): \(b.terminationStatus)\n\(stdout)\n\(stderr)")
        #expect(stderr.contains("run the backup again") && stderr.contains("not committed"), "\(stderr)")
        #expect(try snapshotCount(envA) == before, "no snapshot may be written")
        try expectClean(envA, "after the backup that could not commit")
        let again = try json(envB, ["backup", "--quiet", srcB.path])
        try expectRestores(envA, try #require(again["snapshot_id"] as? String), Self.files(srcB), folder: "tablet-b", "B's backup run again")
        try expectClean(envA, "after B ran again")
    }
}
