import CofferRealm
import CofferVault
import Foundation
import Testing

/// Crash safety with real crashes: `kill -9` the realm process (`coffer realm serve`) in the middle
/// of a guess flood, restart it, and check that no acknowledged guess was forgotten.
@Suite("Realm crash safety", .serialized)
struct RealmCrashTests {
    /// The built `coffer` executable: beside the test bundle (`.build/debug/`), or `$COFFER_BINARY`.
    static func cofferBinary() throws -> URL {
        if let env = ProcessInfo.processInfo.environment["COFFER_BINARY"] { return URL(fileURLWithPath: env) }
        var candidates: [URL] = []
        if let exe = Bundle.main.executableURL { candidates.append(exe.deletingLastPathComponent().appendingPathComponent("coffer")) }
        candidates.append(URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("coffer"))
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        candidates.append(root.appendingPathComponent(".build/debug/coffer"))
        guard let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0.path) }) else {
            throw TestFailure("the coffer executable was not found (build it first: swift build); looked in \(candidates.map(\.path))")
        }
        return found
    }

    static func freePort() -> Int { Int.random(in: 20000...45000) }

    final class Server: @unchecked Sendable {
        let process = Process()
        let port: Int
        init(binary: URL, dir: URL, port: Int) throws {
            self.port = port
            process.executableURL = binary
            process.arguments = ["realm", "serve", "--dir", dir.path, "--listen", "127.0.0.1:\(port)"]
            var env = ProcessInfo.processInfo.environment
            env["COFFER_LOG_LEVEL"] = "error"
            process.environment = env
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
        }
        func kill9() {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    /// Starts `coffer realm serve` and waits until it answers /v1/descriptor (health is on the admin listener).
    static func startServer(binary: URL, dir: URL, port: Int?, client: (Int) -> RealmClient) async throws -> Server {
        for _ in 0..<5 {
            let p = port ?? freePort()
            let server = try Server(binary: binary, dir: dir, port: p)
            for _ in 0..<200 {
                if !server.process.isRunning { break }
                if let (status, _) = try? await client(p).get("/v1/descriptor"), status == 200 { return server }
                try await Task.sleep(for: .milliseconds(25))
            }
            if server.process.isRunning { server.kill9() }
            if port != nil { break }
        }
        throw TestFailure("coffer realm serve did not come up")
    }

    @Test("kill -9 during a guess flood, three times: every acknowledged guess is still counted after restart")
    func killDuringFlood() async throws {
        let binary = try Self.cofferBinary()
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-realm-crash-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let layout = RealmClusterLayout(directory: root, count: 1)
        try layout.prepare()
        let dir = layout.realmDirectory(1)
        var config = try RealmConfig.load(from: dir.configFile)
        config.guessLimit = 100
        config.limits = .unlimitedForBenchmarks   // a flood at one user, well above the default request limits
        try config.save(to: dir.configFile)
        let (keys, _) = try dir.load()
        let descriptor = keys.descriptor(url: "http://127.0.0.1:0")
        let pem = try String(contentsOf: layout.tenantKeyURL, encoding: .utf8)
        let tenant = try await DevelopmentTenant(tenant: VaultConfiguration.developmentTenantName, privateKeyPEM: pem)
        let probe = try RealmProbe(descriptor: descriptor)
        let client = { (port: Int) in RealmClient(url: "http://127.0.0.1:\(port)", probe: probe, tenant: tenant, directory: dir) }

        var server = try await Self.startServer(binary: binary, dir: dir.url, port: nil, client: client)
        let port = server.port
        let realm = client(port)
        let reg = try await realm.register("quinn", guessLimit: 100)

        var acknowledged = 0
        for round in 1...3 {
            let acks = Mutex2(0)
            let stop = Mutex2(false)
            let version = reg.version
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<16 {
                    group.addTask {
                        while !stop.withLock({ $0 }) {
                            guard let a = try? await realm.guess("quinn", version: version) else { continue }
                            if case .q1 = a { acks.withLock { $0 += 1 } }
                        }
                    }
                }
                // Let some guesses through, then crash the realm mid-flood.
                while acks.withLock({ $0 }) < 8 { try await Task.sleep(for: .milliseconds(5)) }
                try await Task.sleep(for: .milliseconds(Int.random(in: 20...120)))
                server.kill9()
                stop.withLock { $0 = true }
                try await group.waitForAll()
            }
            acknowledged += acks.withLock { $0 }
            server = try await Self.startServer(binary: binary, dir: dir.url, port: port, client: client)
            let left = try await realm.attemptsLeft("quinn")
            let counted = 100 - left
            print("crash round \(round): \(acknowledged) acknowledged, \(counted) counted")
            // Never forgotten: everything acknowledged is counted. (Guesses committed whose answer was
            // lost in the crash are counted too: at most one per worker per round.)
            #expect(counted >= acknowledged, "round \(round): \(acknowledged) acknowledged, \(counted) counted")
            #expect(counted <= acknowledged + 16 * round, "round \(round): \(counted) counted for \(acknowledged) acknowledged")
            if counted >= 90 { break }
        }
        // The restarted realm still works normally.
        guard case .q1 = try await realm.guess("quinn", version: reg.version) else { Issue.record("guess after restarts failed"); return }
        server.kill9()
    }
}
