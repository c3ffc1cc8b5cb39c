import CofferVault
import Crypto
import CryptoExtras
import Foundation
import Logging

/// Measures how many guesses (Q1) one realm sustains with durable counters, beside the raw VOPRF
/// evaluation rate of this machine in the same run. Used by `coffer realm bench` and
/// `scripts/bench-realm.sh`; not a test.
public enum RealmBenchmark {
    public struct Report: Sendable, CustomStringConvertible {
        public var cores: Int
        public var voprfPerSecondOneCore: Double
        public var voprfPerSecondAllCores: Double
        public var voprfAllCoresBefore: Double
        public var voprfAllCoresAfter: Double
        public var guesses: Int
        public var guessesAnswered: Int
        public var guessSeconds: Double
        public var concurrency: Int
        public var commits: Int
        public var committedJobs: Int
        /// The store (safe to print) and how many realm instances (each its own store connection) served the run.
        public var store: String = "sqlite"
        public var instances: Int = 1
        public var guessesPerSecond: Double { Double(guessesAnswered) / guessSeconds }
        public var ratio: Double { guessesPerSecond / voprfPerSecondAllCores }

        public var description: String {
            func f(_ x: Double) -> String { String(format: "%.0f", x) }
            return """
            store:                                   \(store), \(instances) realm instance\(instances == 1 ? "" : "s") sharing it
            cores:                                   \(cores)
            raw VOPRF evaluations/s (1 core):        \(f(voprfPerSecondOneCore))
            raw VOPRF evaluations/s (\(cores) cores):       \(f(voprfPerSecondAllCores))  (before the run \(f(voprfAllCoresBefore)), after \(f(voprfAllCoresAfter)))
            realm guesses (Q1)/s, durable:           \(f(guessesPerSecond))  (\(guessesAnswered) of \(guesses) answered in \(String(format: "%.2f", guessSeconds)) s, \(concurrency) concurrent)
            ratio to raw VOPRF (all cores):          \(String(format: "%.0f", ratio * 100)) %  (target >= 80 %)
            group commits during the run:            \(commits) commits for \(committedJobs) write transactions (\(String(format: "%.1f", Double(committedJobs) / Double(max(commits, 1)))) per fsync)
            """
        }
    }

    /// Runs the benchmark in a fresh realm under `directory`.
    /// - Parameters:
    ///   - guesses: Q1 requests in the timed run (spread over users with 100 guesses each).
    ///   - seconds: duration of each raw VOPRF measurement.
    ///   - store: the realm's store as `--store` takes it (nil: SQLite in `directory`).
    ///   - instances: realm services sharing that store, requests spread over them round-robin (each
    ///     opens the store itself: its own SQLite pool, or its own PostgreSQL connection pool).
    public static func run(directory: URL, guesses: Int = 3000, concurrency: Int = 64, seconds: Double = 3,
                           store: String? = nil, instances: Int = 1,
                           progress: @Sendable (String) -> Void = { _ in }) async throws -> Report {
        let cores = ProcessInfo.processInfo.activeProcessorCount
        // 1. Raw VOPRF evaluation rate (the realm's unavoidable per-guess work).
        progress("measuring raw VOPRF evaluation …")
        let one = try await voprfRate(tasks: 1, seconds: seconds)
        let all = try await voprfRate(tasks: cores, seconds: seconds)

        // 2. A fresh realm with a benchmark tenant, L = 100.
        let tenantKey = P256.Signing.PrivateKey()
        let tenantName = "bench-tenant"
        let dir = RealmDirectory(directory)
        let (keys, _) = try dir.initialize(x: 1, guessLimit: 100, tenants: [
            .init(id: tenantName, keys: [.init(kid: "b", alg: "ES256", publicKeyPEM: tenantKey.publicKey.pemRepresentation)])])
        // 100 guesses per user and token, as fast as possible: far above the default request limits,
        // which are raised so the benchmark measures the guess path.
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
        let users = (guesses + 99) / 100
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

        // 4. Tickets (Q0) and sealed Q1 requests, prepared before the clock starts.
        progress("preparing \(guesses) sealed guesses …")
        var prepared: [(bytes: [UInt8], opener: ResponseOpener)] = []
        prepared.reserveCapacity(guesses)
        let blindedElement = try VaultOPRF.blind(Array("wrong password".utf8)).blindedElementBytes
        var tokens: [String] = []
        for u in 0..<users {
            tokens.append(try await tenant.token(user: "bench-user-\(u)", realmID: service.realmID, scope: .recover))
        }
        let tickets = try await withThrowingTaskGroup(of: (Int, Ticket).self) { group in
            for i in 0..<guesses {
                let token = tokens[i / 100]
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
        for i in 0..<guesses {
            let u = i / 100
            prepared.append(try probe.seal(.q1(Q1Request(token: tokens[u], ticket: tickets[i], version: versions[u],
                                                         blindedElement: blindedElement))))
        }

        // 5. The timed run: `concurrency` requests in flight at once.
        progress("timed run …")
        func commitTotals() -> (batches: Int, jobs: Int) {
            services.reduce((0, 0)) { ($0.0 + $1.store.commitCounts.batches, $0.1 + $1.store.commitCounts.jobs) }
        }
        let before = commitTotals()
        let start = ContinuousClock.now
        let answered = try await withThrowingTaskGroup(of: Int.self) { group in
            var next = 0
            var ok = 0
            func add() {
                let p = prepared[next]
                let target = services[next % services.count]
                next += 1
                group.addTask {
                    guard case .sealed(let bytes) = await target.handle(type: .q1, request: p.bytes),
                          case .q1 = try probe.open(bytes, opener: p.opener, type: .q1) else { return 0 }
                    return 1
                }
            }
            while next < min(concurrency, prepared.count) { add() }
            for try await r in group {
                ok += r
                if next < prepared.count { add() }
            }
            return ok
        }
        let elapsed = ContinuousClock.now - start
        let after = commitTotals()
        for s in services { await s.close() }
        // Raw rate again after the run: the machine may be shared, so the mean of before and after
        // is the fairer reference.
        progress("measuring raw VOPRF evaluation again …")
        let allAfter = try await voprfRate(tasks: cores, seconds: seconds)
        let secs = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        return Report(cores: cores, voprfPerSecondOneCore: one, voprfPerSecondAllCores: (all + allAfter) / 2,
                      voprfAllCoresBefore: all, voprfAllCoresAfter: allAfter, guesses: guesses,
                      guessesAnswered: answered, guessSeconds: secs, concurrency: concurrency,
                      commits: after.batches - before.batches, committedJobs: after.jobs - before.jobs,
                      store: try RealmStoreLocation.parse(store ?? "sqlite", directory: dir).description, instances: services.count)
    }

    /// VOPRF evaluations (with proof) per second over `tasks` parallel tasks.
    static func voprfRate(tasks: Int, seconds: Double) async throws -> Double {
        let key = P384._VOPRF.PrivateKey()
        var elements: [[UInt8]] = []
        for i in 0..<64 { elements.append(try VaultOPRF.blind(Array("input \(i)".utf8)).blindedElementBytes) }
        let parsed = elements
        let keyBytes = Array(key.rawRepresentation)
        let start = ContinuousClock.now
        let deadline = start + .milliseconds(Int(seconds * 1000))
        let total = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<tasks {
                group.addTask {
                    let k = try P384._VOPRF.PrivateKey(rawRepresentation: keyBytes)
                    var n = 0
                    while ContinuousClock.now < deadline {
                        let e = try P384._VOPRF.BlindedElement(oprfRepresentation: parsed[n % parsed.count])
                        _ = try k.evaluate(e)
                        n += 1
                    }
                    return n
                }
            }
            return try await group.reduce(0, +)
        }
        let d = ContinuousClock.now - start
        return Double(total) / (Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18)
    }
}
