import CofferStorage
import CofferWebDAV
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The real `coffer` binary against real WebDAV servers on loopback and an rclone remote, as a
/// user runs it: `--repo webdav://...` (credentials in COFFER_WEBDAV_USER/PASSWORD) and
/// `--repo rclone:PATH`. Runs `.build/debug/coffer`, so build first.
@Suite(.serialized) struct WebDAVEndToEndTests {
    /// One user's world: a COFFER_HOME, a data folder, and the repository location.
    struct World {
        let root: URL
        let home: URL
        let data: URL
        let environment: [String: String]

        init(repo: String, extra: [String: String] = [:]) throws {
            guard FileManager.default.isExecutableFile(atPath: CofferWorld.binary.path) else { throw CofferWorld.BinaryMissing() }
            root = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-dave2e-\(UUID().uuidString.prefix(8))")
            home = root.appendingPathComponent("home")
            data = root.appendingPathComponent("data")
            try FileManager.default.createDirectory(at: home, withIntermediateDirectories: true)
            var env = ProcessInfo.processInfo.environment
            for key in env.keys where key.hasPrefix("AWS_") || key.hasPrefix("COFFER_") || key.hasPrefix("RCLONE_") { env[key] = nil }
            env["COFFER_HOME"] = home.path
            env["COFFER_REPO"] = repo
            env["COFFER_WEBDAV_NETRC"] = root.appendingPathComponent("no-netrc").path
            env["RCLONE_CONFIG"] = root.appendingPathComponent("rclone.conf").path
            for (k, v) in extra { env[k] = v }
            environment = env
        }

        @discardableResult
        func coffer(_ args: [String]) async throws -> String { try await runSplit(CofferWorld.binary.path, args, environment) }

        func backup() async throws -> [String: Any] {
            let out = try await runSplit(CofferWorld.binary.path, ["backup", "--json", "--quiet", data.path], environment)
            return try #require(try JSONSerialization.jsonObject(with: Data((out.split(separator: "\n").last ?? "").utf8)) as? [String: Any], "backup --json printed: \(out)")
        }

        func checkJSON() async throws -> [String: Any] {
            let out = try await runSplit(CofferWorld.binary.path, ["check", "--read-data", "--json"], environment, allowFailure: true)
            return try #require(try JSONSerialization.jsonObject(with: Data((out.split(separator: "\n").last ?? "").utf8)) as? [String: Any], "check --json printed: \(out)")
        }

        /// init, backup, day 2, backup, restore (identical), check --read-data (clean).
        func dayOneDayTwo(seed: Int) async throws {
            try await coffer(["init", "--pack-size", "1"])
            try await ChatData.make(at: data, messages: 5_000, mediaMiB: 6, seed: seed)
            let first = try await backup()
            #expect(first["partial"] as? Bool == false)
            try await ChatData.mutate(at: data, seed: seed + 1)
            let second = try await backup()
            #expect(second["parent_id"] as? String == first["snapshot_id"] as? String, "day 2 found day 1 as its parent")
            #expect((second["bytes_stored"] as? Int ?? .max) < (first["bytes_stored"] as? Int ?? 0), "\(first)\n\(second)")
            let restored = root.appendingPathComponent("restore")
            try await coffer(["restore", "latest", "--target", restored.path, "--quiet"])
            try await ChatData.expectSame(data, restored.appendingPathComponent("data"))
            let check = try await checkJSON()
            #expect(check["clean"] as? Bool == true, "\(check)")
            #expect((check["snapshots_checked"] as? Int) == 2, "\(check)")
            #expect((check["blobs_verified"] as? Int ?? 0) > 0, "\(check)")
        }

        func remove() { try? FileManager.default.removeItem(at: root) }
    }

    /// Files under `dir` whose names end in `suffix`.
    static func files(under dir: URL, suffix: String = "") -> [String] {
        (FileManager.default.enumerator(atPath: dir.path)?.compactMap { $0 as? String } ?? []).filter {
            var isDir: ObjCBool = false
            return $0.hasSuffix(suffix) && FileManager.default.fileExists(atPath: dir.appendingPathComponent($0).path, isDirectory: &isDir) && !isDir.boolValue
        }
    }

    @Test("init, backup, day 2, restore and check --read-data over webdav:// (lighttpd, Digest SHA-256)")
    func overWebDAV() async throws {
        try await WebDAVServer.with(.lighttpd) { server in
            let world = try World(repo: server.url("phone/backups"), extra: server.credentialEnvironment)
            defer { world.remove() }
            try await world.dayOneDayTwo(seed: 21)
            let repo = server.served.appendingPathComponent("phone/backups")
            let stored = Self.files(under: repo)
            #expect(stored.contains("config") && stored.contains { $0.hasPrefix("data/") } && stored.contains { $0.hasPrefix("snapshots/") })
            #expect(Self.files(under: repo, suffix: "~tmp").isEmpty, "no temporaries left")
        }
    }

    @Test("init, backup, day 2, restore and check --read-data over an rclone remote (a local folder)")
    func overRclone() async throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-rclone-e2e-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: folder) }
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let world = try World(repo: "rclone:\(folder.path)/repo")
        defer { world.remove() }
        try await world.dayOneDayTwo(seed: 31)
        let stored = Self.files(under: folder.appendingPathComponent("repo"))
        #expect(stored.contains("config") && stored.contains { $0.hasPrefix("data/") }, "\(stored.prefix(5))")
        // Every rclone the runs started is gone: none serves this folder any more.
        #expect(Self.processesMentioning(folder.path).isEmpty, "rclone left running: \(Self.processesMentioning(folder.path))")
    }

    /// Process ids whose command line mentions `text` (Linux's /proc; empty elsewhere).
    static func processesMentioning(_ text: String) -> [Int32] {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        return entries.compactMap { Int32($0) }.filter { pid in
            guard let raw = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
            return String(decoding: raw.map { $0 == 0 ? 32 : $0 }, as: UTF8.self).contains(text)
        }
    }

    @Test("kill -9 of a backup over WebDAV mid-upload: the next backup completes and check is clean")
    func killedBackup() async throws {
        try await WebDAVServer.with(.lighttpd) { server in
            let world = try World(repo: server.url("repo"), extra: server.credentialEnvironment)
            defer { world.remove() }
            try await world.coffer(["init", "--pack-size", "1"])
            try await ChatData.make(at: world.data, messages: 5_000, mediaMiB: 8, seed: 41)
            // The backup stops itself (SIGSTOP) after its third pack is stored: a known point mid-upload.
            var env = world.environment
            env["COFFER_TEST_STOP_AFTER_PACKS"] = "3"
            let p = Process()
            p.executableURL = CofferWorld.binary
            p.arguments = ["backup", "--quiet", world.data.path]
            p.environment = env
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            p.standardInput = FileHandle.nullDevice
            try p.run()
            let deadline = Date().addingTimeInterval(120)
            while !WritersScenario.isStopped(p.processIdentifier) && p.isRunning && Date() < deadline { usleep(10_000) }
            let wasStopped = WritersScenario.isStopped(p.processIdentifier)
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
            try #require(wasStopped, "the backup reached its third pack and stopped itself")
            #expect(p.terminationReason == .uncaughtSignal)
            let repo = server.served.appendingPathComponent("repo")
            #expect(Self.files(under: repo.appendingPathComponent("data")).count >= 3, "packs were on the server when it died")
            #expect(Self.files(under: repo.appendingPathComponent("snapshots")).isEmpty, "no snapshot was written before the kill")

            let second = try await world.backup()
            #expect(second["partial"] as? Bool == false)
            let restored = world.root.appendingPathComponent("restore")
            try await world.coffer(["restore", "latest", "--target", restored.path, "--quiet"])
            try await ChatData.expectSame(world.data, restored.appendingPathComponent("data"))
            let check = try await world.checkJSON()
            #expect(check["clean"] as? Bool == true, "\(check)")
        }
    }

    @Test("two backups and a restore through a proxy that drops connections mid-upload and answers 500/503 lose nothing")
    func throughFaultProxy() async throws {
        try await WebDAVServer.with(.lighttpd) { server in
            let proxy = try await FaultProxy.start(upstreamPort: server.port, rate: 0.15, stallSeconds: 3, seed: 13)
            defer { proxy.stop() }
            let world = try World(repo: "webdav://127.0.0.1:\(proxy.port)/repo", extra: server.credentialEnvironment)
            defer { world.remove() }
            try await world.coffer(["init", "--pack-size", "1"])
            try await ChatData.make(at: world.data, messages: 5_000, mediaMiB: 6, seed: 51)
            let first = try await world.backup()
            #expect(first["partial"] as? Bool == false)
            try await ChatData.mutate(at: world.data, seed: 52)
            let second = try await world.backup()
            #expect(second["parent_id"] as? String == first["snapshot_id"] as? String)
            let restored = world.root.appendingPathComponent("restore")
            try await world.coffer(["restore", "latest", "--target", restored.path, "--quiet"])
            try await ChatData.expectSame(world.data, restored.appendingPathComponent("data"))
            let counts = proxy.counts()
            for kind in ["reset", "midreset", "stall", "500", "503"] {
                #expect((counts[kind] ?? 0) >= 1, "the proxy injected \(kind) at least once: \(counts)")
            }
            // Straight to the server, past the proxy: the repository is clean.
            let direct = try World(repo: server.url("repo"), extra: server.credentialEnvironment.merging(["COFFER_HOME": world.home.path]) { $1 })
            defer { direct.remove() }
            let check = try await direct.checkJSON()
            #expect(check["clean"] as? Bool == true, "\(check)")
        }
    }

    @Test("wrong credentials: exit 11 and a message naming the user and what to fix, never the password")
    func wrongCredentials() async throws {
        try await WebDAVServer.with(.wsgidav) { server in
            let wrong = "wrong-\(UUID().uuidString.prefix(8))"
            let world = try World(repo: server.url("repo"), extra: ["COFFER_WEBDAV_USER": server.user, "COFFER_WEBDAV_PASSWORD": wrong])
            defer { world.remove() }
            let (status, out, err) = try await Self.run(world, ["init"])
            #expect(status == 11, "exit status \(status): \(err)")
            #expect(err.contains("rejected user \"alice\""), "\(err)")
            #expect(!(out + err).contains(wrong))
            #expect(!err.contains(server.password))
            // No credentials at all: the message names the variables.
            let anonymous = try World(repo: server.url("repo"))
            defer { anonymous.remove() }
            let (status2, _, err2) = try await Self.run(anonymous, ["init"])
            #expect(status2 == 11 && err2.contains("COFFER_WEBDAV_USER"), "\(status2): \(err2)")
            // A password in the URL is refused before anything is sent, and not echoed.
            let inURL = try World(repo: "webdav://alice:\(wrong)@127.0.0.1:\(server.port)/repo")
            defer { inURL.remove() }
            let (status3, out3, err3) = try await Self.run(inURL, ["init"])
            #expect(status3 != 0 && err3.contains("must not carry a user or password"), "\(status3): \(err3)")
            #expect(!(out3 + err3).contains(wrong))
            #expect(try FileManager.default.contentsOfDirectory(atPath: server.served.path).isEmpty, "nothing was written")
        }
    }

    static func run(_ world: World, _ args: [String]) async throws -> (Int32, String, String) {
        try await offPool { try runBlocking(world, args) }
    }

    static func runBlocking(_ world: World, _ args: [String]) throws -> (Int32, String, String) {
        let dir = world.root
        let outURL = dir.appendingPathComponent("out-\(UUID().uuidString.prefix(6))"), errURL = dir.appendingPathComponent("err-\(UUID().uuidString.prefix(6))")
        _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
        let p = Process()
        p.executableURL = CofferWorld.binary
        p.arguments = args
        p.environment = world.environment
        p.standardOutput = try FileHandle(forWritingTo: outURL)
        p.standardError = try FileHandle(forWritingTo: errURL)
        p.standardInput = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        return (p.terminationStatus, (try? String(contentsOf: outURL, encoding: .utf8)) ?? "", (try? String(contentsOf: errURL, encoding: .utf8)) ?? "")
    }
}
