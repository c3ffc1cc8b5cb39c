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

    /// `coffer realm serve ARGUMENTS`, started with port 0 wherever the caller wants a fresh port: the
    /// realm binds a free port itself and prints it (`listening on http://HOST:PORT`, and `admin ... on
    /// http://HOST:PORT`), which this reads from its stdout. A port picked by the test and bound later by
    /// the realm could be taken in between by another test's connection (that failed CI once).
    final class Server: @unchecked Sendable {
        let process = Process()
        private let lines = Mutex2("")
        private let errors = Mutex2("")
        init(binary: URL, arguments: [String]) throws {
            process.executableURL = binary
            process.arguments = ["realm", "serve"] + arguments
            var env = ProcessInfo.processInfo.environment
            env["COFFER_LOG_LEVEL"] = "error"
            process.environment = env
            let out = Pipe(), err = Pipe()
            process.standardOutput = out
            process.standardError = err
            out.fileHandleForReading.readabilityHandler = { [lines] h in
                let d = h.availableData
                if !d.isEmpty { lines.withLock { $0 += String(decoding: d, as: UTF8.self) } }
            }
            err.fileHandleForReading.readabilityHandler = { [errors] h in
                let d = h.availableData
                if !d.isEmpty { errors.withLock { $0 += String(decoding: d, as: UTF8.self) } }
            }
            try process.run()
        }
        /// What the realm printed on stderr so far (its error when it exited).
        var stderr: String { errors.withLock { $0 } }

        /// The port printed on the stdout line containing `marker` (waits up to ~20 s for it).
        func boundPort(after marker: String) async throws -> Int {
            for _ in 0..<800 {
                let text = lines.withLock { $0 }
                for line in text.split(separator: "\n") where line.contains(marker) {
                    if let colon = line.lastIndex(of: ":"), let port = Int(line[line.index(after: colon)...].prefix(while: \.isNumber)) {
                        return port
                    }
                }
                if !process.isRunning {
                    try? await Task.sleep(for: .milliseconds(50))   // let the pipes drain
                    throw TestFailure("coffer realm serve exited with \(process.terminationStatus): \(stderr)")
                }
                try await Task.sleep(for: .milliseconds(25))
            }
            throw TestFailure("coffer realm serve never printed '\(marker)'; stdout: \(lines.withLock { $0 }) stderr: \(stderr)")
        }
        /// The public port (`listening on`).
        func port() async throws -> Int { try await boundPort(after: "listening on") }
        /// The admin listener's port.
        func adminPort() async throws -> Int { try await boundPort(after: "admin (/health, /metrics) on") }

        func kill9() {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        func stop() {
            if process.isRunning { process.terminate() }
            process.waitUntilExit()
        }
    }

    /// Starts `coffer realm serve` on a free port of its own choosing and waits until it answers
    /// /v1/descriptor (health is on the admin listener); returns the server and its port.
    static func startServer(binary: URL, dir: URL, client: (Int) -> RealmClient) async throws -> (Server, Int) {
        let server = try Server(binary: binary, arguments: ["--dir", dir.path, "--listen", "127.0.0.1:0"])
        let port = try await server.port()
        for _ in 0..<400 {
            if !server.process.isRunning { throw TestFailure("coffer realm serve exited with \(server.process.terminationStatus): \(server.stderr)") }
            if let (status, _) = try? await client(port).get("/v1/descriptor"), status == 200 { return (server, port) }
            try await Task.sleep(for: .milliseconds(25))
        }
        server.kill9()
        throw TestFailure("coffer realm serve on port \(port) never answered /v1/descriptor")
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

        var (server, port) = try await Self.startServer(binary: binary, dir: dir.url, client: client)
        let reg = try await client(port).register("quinn", guessLimit: 100)

        var acknowledged = 0
        for round in 1...3 {
            let realm = client(port)
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
            // The restarted realm binds a fresh port: the old one may have been taken meanwhile.
            (server, port) = try await Self.startServer(binary: binary, dir: dir.url, client: client)
            let left = try await client(port).attemptsLeft("quinn")
            let counted = 100 - left
            print("crash round \(round): \(acknowledged) acknowledged, \(counted) counted")
            // Never forgotten: everything acknowledged is counted. (Guesses committed whose answer was
            // lost in the crash are counted too: at most one per worker per round.)
            #expect(counted >= acknowledged, "round \(round): \(acknowledged) acknowledged, \(counted) counted")
            #expect(counted <= acknowledged + 16 * round, "round \(round): \(counted) counted for \(acknowledged) acknowledged")
            if counted >= 90 { break }
        }
        // The restarted realm still works normally.
        guard case .q1 = try await client(port).guess("quinn", version: reg.version) else { Issue.record("guess after restarts failed"); return }
        server.kill9()
    }
}
