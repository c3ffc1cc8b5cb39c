import CofferVault
import Crypto
import CryptoExtras
import Foundation
import Logging
import AsyncHTTPClient
import NIOCore
import ServiceLifecycle

/// Measures how many guesses (Q1) one realm sustains with durable counters, beside the raw VOPRF
/// evaluation rate of this machine in the same run. Used by `coffer realm bench` and
/// `scripts/bench-realm.sh`; not a test.
public enum RealmBenchmark {
    /// How the timed requests reach the realm.
    public enum Transport: String, Sendable, CaseIterable {
        /// `RealmService.handle` called directly: sealed exactly as over HTTP, no HTTP.
        case inProcess = "in process"
        /// A real Hummingbird server per realm instance on 127.0.0.1, async-http-client POSTs.
        case http = "HTTP"
    }

    /// One timed run.
    public struct Run: Sendable {
        public var transport: Transport
        public var guesses: Int
        public var answered: Int
        public var seconds: Double
        public var commits: Int
        public var committedJobs: Int
        /// CPU seconds of this process (realm, client and server alike) during the run.
        public var processCPU: Double
        /// CPU seconds of the whole machine during the run (Linux: /proc/stat; nil elsewhere):
        /// this process, the database server, and whatever else runs.
        public var machineCPU: Double?
        public var perSecond: Double { Double(answered) / seconds }
    }

    public struct Report: Sendable, CustomStringConvertible {
        public var cores: Int
        public var voprfPerSecondOneCore: Double
        public var voprfPerSecondAllCores: Double
        public var voprfAllCoresBefore: Double
        public var voprfAllCoresAfter: Double
        public var runs: [Run]
        public var concurrency: Int
        public var users: Int
        /// The store (safe to print) and how many realm instances (each its own store connection) served the run.
        public var store: String = "sqlite"
        public var instances: Int = 1
        /// CPU seconds of one raw VOPRF evaluation (with proof), measured on the evaluating threads.
        public var voprfCPU: Double

        public var description: String {
            func f(_ x: Double) -> String { String(format: "%.0f", x) }
            func ms(_ x: Double) -> String { String(format: "%.2f", x * 1000) }
            var lines = [
                "store:                                   \(store), \(instances) realm instance\(instances == 1 ? "" : "s") sharing it",
                "cores:                                   \(cores)",
                "raw VOPRF evaluations/s (1 core):        \(f(voprfPerSecondOneCore))  (\(ms(voprfCPU)) ms CPU each)",
                "raw VOPRF evaluations/s (\(cores) cores):       \(f(voprfPerSecondAllCores))  (before the runs \(f(voprfAllCoresBefore)), after \(f(voprfAllCoresAfter)))",
            ]
            for r in runs {
                let name = r.transport.rawValue
                lines.append("realm guesses (Q1)/s, durable, \(name):".padding(toLength: 45, withPad: " ", startingAt: 0)
                             + "\(f(r.perSecond))  (\(r.answered) of \(r.guesses) answered in \(String(format: "%.2f", r.seconds)) s, \(concurrency) concurrent over \(users) users)")
                lines.append("  ratio to raw VOPRF (all cores):        \(String(format: "%.0f", r.perSecond / voprfPerSecondAllCores * 100)) %  (target >= 80 %)")
                var cpu = "  CPU per guess:                        \(ms(r.processCPU / Double(max(r.answered, 1)))) ms this process"
                if let m = r.machineCPU {
                    cpu += ", \(ms(m / Double(max(r.answered, 1)))) ms machine (busy \(String(format: "%.2f", m / r.seconds)) of \(cores) cores)"
                }
                lines.append(cpu + ";  VOPRF alone \(ms(voprfCPU)) ms")
                lines.append("  commits during the run:               \(r.commits) commits for \(r.committedJobs) write transactions (\(String(format: "%.1f", Double(r.committedJobs) / Double(max(r.commits, 1)))) per commit)")
            }
            return lines.joined(separator: "\n")
        }
    }

    /// Runs the benchmark in a fresh realm under `directory`.
    /// - Parameters:
    ///   - guesses: Q1 requests in each timed run.
    ///   - perUser: guesses per user in each run. Consecutive requests go to different users (request
    ///     `i` to user `i mod users`), as a realm's load is many users' recoveries: one user's guesses
    ///     are few (the per-user rate limit admits 2 a minute by default), so concurrent guesses of one
    ///     user would measure that user's lock queue rather than the store.
    ///   - seconds: duration of each raw VOPRF measurement.
    ///   - store: the realm's store as `--store` takes it (nil: SQLite in `directory`).
    ///   - instances: realm services sharing that store, requests spread over them round-robin (each
    ///     opens the store itself: its own SQLite pool, or its own PostgreSQL connection pool).
    ///   - transports: the timed runs, one after another on the same realm (fresh tickets each).
    public static func run(directory: URL, guesses: Int = 3000, perUser: Int = 10, concurrency: Int = 64, seconds: Double = 3,
                           store: String? = nil, instances: Int = 1, transports: [Transport] = [.inProcess],
                           progress: @Sendable (String) -> Void = { _ in }) async throws -> Report {
        let cores = ProcessInfo.processInfo.activeProcessorCount
        // 1. Raw VOPRF evaluation rate (the realm's unavoidable per-guess work).
        progress("measuring raw VOPRF evaluation …")
        let (one, voprfCPU) = try await voprfRate(tasks: 1, seconds: seconds)
        let all = try await voprfRate(tasks: cores, seconds: seconds).perSecond

        // 2. A fresh realm with a benchmark tenant, L = 100.
        let tenantKey = P256.Signing.PrivateKey()
        let tenantName = "bench-tenant"
        let dir = RealmDirectory(directory)
        let (keys, _) = try dir.initialize(x: 1, guessLimit: 100, tenants: [
            .init(id: tenantName, keys: [.init(kid: "b", alg: "ES256", publicKeyPEM: tenantKey.publicKey.pemRepresentation)])])
        // As many guesses per user and token as fast as possible: far above the default request
        // limits, which are raised so the benchmark measures the guess path.
        var config = try RealmConfig.load(from: dir.configFile)
        config.limits = .unlimitedForBenchmarks
        config.store = store
        try config.save(to: dir.configFile)
        var log = Logger(label: "coffer.realm.bench")
        log.logLevel = .warning
        var services: [RealmService] = []
        for _ in 0..<max(1, instances) { services.append(try await RealmService(directory: dir, logger: log)) }
        let service = services[0]
        let probe = RealmProbe(realmID: service.realmID, key: try RealmPublicKey(id: keys.hpkeKeys[0].id, rawRepresentation: Array(keys.hpkeKeys[0].publicKey.rawRepresentation)))
        let tenant = try await DevelopmentTenant(tenant: tenantName, privateKeyPEM: tenantKey.pemRepresentation)
        let policy = try VaultPolicy(log2N: 15, guessLimit: 100)

        // 3. Register the users (fields are random: the realm stores them without interpreting them).
        let perUser = max(1, min(perUser, 100 / max(1, transports.count)))
        let users = (guesses + perUser - 1) / perUser
        progress("registering \(users) users …")
        var versions: [RecordVersion] = []
        for u in 0..<users {
            let user = "bench-user-\(u)"
            let token = try await tenant.token(user: user, realmID: service.realmID, scope: .register)
            let blinded = try VaultOPRF.blind(Array("password-\(u)".utf8))
            guard case .r1(let r1) = try await probe.exchange(.r1(R1Request(token: token, blindedElement: blinded.blindedElementBytes)), with: service) else {
                throw RealmFileError(path: "", message: "benchmark registration R1 failed")
            }
            let version = RecordVersion.random()
            func rnd(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8.random(in: 0...255) } }
            let r2 = R2Request(token: token, pendingID: r1.pendingID, expectedVersion: .zero, version: version,
                               maskedShare: rnd(32), commitment: rnd(32), verificationKey: rnd(32), signature: rnd(64),
                               unlockTag: rnd(32), wrappedKey: rnd(60), policy: policy)
            guard case .r2 = try await probe.exchange(.r2(r2), with: service) else {
                throw RealmFileError(path: "", message: "benchmark registration R2 failed")
            }
            versions.append(version)
        }
        var tokens: [String] = []
        for u in 0..<users {
            tokens.append(try await tenant.token(user: "bench-user-\(u)", realmID: service.realmID, scope: .recover))
        }
        let blindedElement = try VaultOPRF.blind(Array("wrong password".utf8)).blindedElementBytes

        // HTTP: a real server per realm instance on loopback, and one HTTP client.
        var servers: [(group: ServiceGroup, task: Task<Void, any Error>, url: String)] = []
        var client: HTTPClient?
        if transports.contains(.http) {
            for s in services {
                let (stream, cont) = AsyncStream<Int>.makeStream()
                let app = RealmServer.application(service: s, host: "127.0.0.1", port: 0, logger: log) { p in
                    cont.yield(p)
                    cont.finish()
                }
                let group = ServiceGroup(configuration: .init(services: [app], logger: log))
                let task = Task {
                    defer { cont.finish() }
                    try await group.run()
                }
                var port: Int?
                for await p in stream { port = p }
                guard let port else { throw RealmFileError(path: "", message: "benchmark server could not listen") }
                servers.append((group, task, "http://127.0.0.1:\(port)"))
            }
            var pool = HTTPClient.Configuration.ConnectionPool(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: concurrency)
            pool.retryConnectionEstablishment = false
            client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: HTTPClient.Configuration(connectionPool: pool))
        }

        var runs: [Run] = []
        for transport in transports {
            // 4. Tickets (Q0) and sealed Q1 requests, prepared before the clock starts.
            progress("preparing \(guesses) sealed guesses (\(transport.rawValue)) …")
            let tickets = try await withThrowingTaskGroup(of: (Int, Ticket).self) { group in
                for i in 0..<guesses {
                    let token = tokens[i % users]
                    group.addTask {
                        guard case .q0(let a) = try await probe.exchange(.q0(Q0Request(token: token)), with: service) else {
                            throw RealmFileError(path: "", message: "benchmark Q0 failed")
                        }
                        return (i, a.ticket)
                    }
                }
                var out = [Ticket?](repeating: nil, count: guesses)
                for try await (i, t) in group { out[i] = t }
                return out.map { $0! }
            }
            var prepared: [(bytes: [UInt8], opener: ResponseOpener)] = []
            prepared.reserveCapacity(guesses)
            for i in 0..<guesses {
                let u = i % users
                prepared.append(try probe.seal(.q1(Q1Request(token: tokens[u], ticket: tickets[i], version: versions[u],
                                                             blindedElement: blindedElement))))
            }
            let requests = prepared
            let urls = servers.map(\.url)
            let http = client

            // 5. The timed run: `concurrency` requests in flight at once.
            progress("timed run (\(transport.rawValue)) …")
            func commitTotals() -> (batches: Int, jobs: Int) {
                services.reduce((0, 0)) { ($0.0 + $1.store.commitCounts.batches, $0.1 + $1.store.commitCounts.jobs) }
            }
            let before = commitTotals()
            let cpuBefore = processCPUSeconds()
            let machineBefore = machineCPUSeconds()
            let start = ContinuousClock.now
            let answered = try await withThrowingTaskGroup(of: Int.self) { group in
                var next = 0
                var ok = 0
                func add() {
                    let p = requests[next]
                    let instance = next % services.count
                    let target = services[instance]
                    next += 1
                    group.addTask {
                        let answer: [UInt8]
                        if transport == .http, let http {
                            var request = HTTPClientRequest(url: urls[instance] + VaultMessageType.q1.path)
                            request.method = .POST
                            request.headers.add(name: "Content-Type", value: "application/octet-stream")
                            request.body = .bytes(ByteBuffer(bytes: p.bytes))
                            let response = try await http.execute(request, timeout: .seconds(60))
                            guard response.status == .ok else { return 0 }
                            var body = try await response.body.collect(upTo: 64 * 1024)
                            answer = body.readBytes(length: body.readableBytes) ?? []
                        } else {
                            guard case .sealed(let bytes) = await target.handle(type: .q1, request: p.bytes) else { return 0 }
                            answer = bytes
                        }
                        guard case .q1 = try probe.open(answer, opener: p.opener, type: .q1) else { return 0 }
                        return 1
                    }
                }
                while next < min(concurrency, requests.count) { add() }
                for try await r in group {
                    ok += r
                    if next < requests.count { add() }
                }
                return ok
            }
            let elapsed = ContinuousClock.now - start
            let cpuAfter = processCPUSeconds()
            let machineAfter = machineCPUSeconds()
            let after = commitTotals()
            let secs = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            runs.append(Run(transport: transport, guesses: guesses, answered: answered, seconds: secs,
                            commits: after.batches - before.batches, committedJobs: after.jobs - before.jobs,
                            processCPU: cpuAfter - cpuBefore,
                            machineCPU: machineBefore.flatMap { b in machineAfter.map { $0 - b } }))
        }
        try await client?.shutdown()
        for server in servers {
            await server.group.triggerGracefulShutdown()
            _ = try? await server.task.value
        }
        for s in services { await s.close() }
        // Raw rate again after the runs: the machine may be shared, so the mean of before and after
        // is the fairer reference.
        progress("measuring raw VOPRF evaluation again …")
        let allAfter = try await voprfRate(tasks: cores, seconds: seconds).perSecond
        return Report(cores: cores, voprfPerSecondOneCore: one, voprfPerSecondAllCores: (all + allAfter) / 2,
                      voprfAllCoresBefore: all, voprfAllCoresAfter: allAfter, runs: runs, concurrency: concurrency, users: users,
                      store: try RealmStoreLocation.parse(store ?? "sqlite", directory: dir).description, instances: services.count,
                      voprfCPU: voprfCPU)
    }

    /// CPU seconds this process has used (every thread).
    static func processCPUSeconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// CPU seconds the calling thread has used.
    static func threadCPUSeconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// CPU seconds every core of the machine has been busy (not idle, not waiting for I/O) since boot:
    /// Linux `/proc/stat`; nil elsewhere.
    static func machineCPUSeconds() -> Double? {
        #if os(Linux)
        guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
              let line = text.split(separator: "\n").first, line.hasPrefix("cpu ") else { return nil }
        let v = line.split(separator: " ").dropFirst().compactMap { Double($0) }
        guard v.count >= 5 else { return nil }
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        return (v.reduce(0, +) - v[3] - v[4]) / ticks
        #else
        return nil
        #endif
    }

    /// VOPRF evaluations (with proof) per second over `tasks` parallel tasks, and the CPU seconds of
    /// one (the evaluating threads' CPU time: on a shared machine the rate is less than 1 / that).
    static func voprfRate(tasks: Int, seconds: Double) async throws -> (perSecond: Double, cpuEach: Double) {
        let key = P384._VOPRF.PrivateKey()
        var elements: [[UInt8]] = []
        for i in 0..<64 { elements.append(try VaultOPRF.blind(Array("input \(i)".utf8)).blindedElementBytes) }
        let parsed = elements
        let keyBytes = Array(key.rawRepresentation)
        let start = ContinuousClock.now
        let deadline = start + .milliseconds(Int(seconds * 1000))
        let (total, cpu) = try await withThrowingTaskGroup(of: (Int, Double).self) { group in
            for _ in 0..<tasks {
                group.addTask {
                    let k = try P384._VOPRF.PrivateKey(rawRepresentation: keyBytes)
                    var n = 0
                    // No suspension point in the loop: the task stays on one thread, whose CPU clock counts it.
                    let cpu0 = threadCPUSeconds()
                    while ContinuousClock.now < deadline {
                        let e = try P384._VOPRF.BlindedElement(oprfRepresentation: parsed[n % parsed.count])
                        _ = try k.evaluate(e)
                        n += 1
                    }
                    return (n, threadCPUSeconds() - cpu0)
                }
            }
            return try await group.reduce((0, 0.0)) { ($0.0 + $1.0, $0.1 + $1.1) }
        }
        let d = ContinuousClock.now - start
        return (Double(total) / (Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18), cpu / Double(max(total, 1)))
    }
}
