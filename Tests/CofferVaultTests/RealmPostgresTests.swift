import CofferRealm
import CofferVault
import Foundation
import Testing

/// Realms on PostgreSQL with real processes: two `coffer realm serve` on one database, kill -9 of one
/// mid-flood, `coffer realm migrate` there and back, readiness and store metrics.
@Suite("Realm on PostgreSQL", .serialized)
struct RealmPostgresTests {
    /// A one-realm layout whose realm.json names `store`, a client factory for a port, and the registration user.
    struct Setup {
        let root: URL
        let dir: RealmDirectory
        let client: @Sendable (Int) -> RealmClient
    }

    static func setup(store: PostgresStoreURL, guessLimit: Int = 10) async throws -> Setup {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-realm-pg-\(UUID().uuidString)")
        let layout = RealmClusterLayout(directory: root, count: 1, postgres: store)
        try layout.prepare()
        let dir = layout.realmDirectory(1)
        var config = try RealmConfig.load(from: dir.configFile)
        config.guessLimit = guessLimit
        config.limits = .unlimitedForBenchmarks   // floods at one user, above the default request limits
        try config.save(to: dir.configFile)
        let (keys, _) = try dir.load()
        let probe = try RealmProbe(descriptor: keys.descriptor(url: "http://127.0.0.1:0"))
        let pem = try String(contentsOf: layout.tenantKeyURL, encoding: .utf8)
        let tenant = try await DevelopmentTenant(tenant: VaultConfiguration.developmentTenantName, privateKeyPEM: pem)
        return Setup(root: root, dir: dir, client: { port in RealmClient(url: "http://127.0.0.1:\(port)", probe: probe, tenant: tenant, directory: dir) })
    }

    @Test("two realm processes on one database: 200 concurrent wrong guesses split over both, exactly L answered and counted; the record is then destroyed")
    func twoProcessesFlood() async throws {
        let binary = try RealmCrashTests.cofferBinary()
        try await PostgresTestServer.withPostgres { url in
            let s = try await Self.setup(store: url)
            defer { try? FileManager.default.removeItem(at: s.root) }
            let (a, portA) = try await RealmCrashTests.startServer(binary: binary, dir: s.dir.url, client: s.client)
            defer { a.stop() }
            let (b, portB) = try await RealmCrashTests.startServer(binary: binary, dir: s.dir.url, client: s.client)
            defer { b.stop() }
            let reg = try await s.client(portA).register("carol")
            // On a loaded machine a realm can give up on a slow transaction (REALM.md: 15 s for a
            // connection, 30 s for an operation) and answer internalError, while the transaction
            // still commits: a guess counted without its answer. (CI failed this suite once with
            // three issues its log cut off; a counted guess without its answer is the explanation
            // found that fits three: 9 answered, their attempts-left set, the record not destroyed.
            // The messages below now say what was answered.) The protocol's remedy is the client's: Q1 again with the same ticket and
            // blinded element, sealed afresh, gets the stored answer without a second count
            // (VAULT.md). So a guess here retries as a client would, and exactly L are still answered.
            let retries = Mutex2(0), refusals = Mutex2([String: Int]())
            let answers = try await withThrowingTaskGroup(of: Q1Answer?.self) { group in
                for i in 0..<200 {
                    let realm = s.client(i % 2 == 0 ? portA : portB)
                    group.addTask {
                        func internalError(_ a: VaultAnswer) -> Bool {
                            if case .error(let e) = a, e.code == .internalError { return true }
                            return false
                        }
                        var ticket: Q0Answer?
                        for _ in 0..<5 where ticket == nil {
                            let a = try await realm.send(.q0(Q0Request(token: try await realm.token("carol", .recover))))
                            if case .q0(let q) = a { ticket = q } else if internalError(a) { retries.withLock { $0 += 1 } } else {
                                refusals.withLock { $0["Q0 \(a)", default: 0] += 1 }
                                return nil
                            }
                        }
                        guard let ticket else { throw TestFailure("Q0 answered internalError five times") }
                        let blinded = try VaultOPRF.blind(rnd(32))
                        for _ in 0..<5 {
                            let a = try await realm.send(.q1(Q1Request(token: try await realm.token("carol", .recover), ticket: ticket.ticket,
                                                                        version: reg.version, blindedElement: blinded.blindedElementBytes)))
                            if case .q1(let q) = a { return q }
                            guard internalError(a) else {
                                refusals.withLock { $0["Q1 \(a)", default: 0] += 1 }
                                return nil
                            }
                            retries.withLock { $0 += 1 }
                        }
                        throw TestFailure("Q1 answered internalError five times")
                    }
                }
                return try await group.reduce(into: [Q1Answer]()) { if let q = $1 { $0.append(q) } }
            }
            print("two processes, 200 guesses: \(answers.count) answered, \(retries.withLock { $0 }) requests retried after internalError")
            let seen = answers.map(\.attemptsLeft).sorted()
            #expect(answers.count == 10, "answered \(answers.count) guesses, attempts left \(seen); refused: \(refusals.withLock { $0 })")
            #expect(Set(seen) == Set((0..<10).map { UInt8($0) }), "attempts left \(seen)")
            #expect(try await s.client(portA).attemptsLeft("carol") == 0)
            #expect(try await s.client(portB).attemptsLeft("carol") == 0)
            // Every challenge answered wrongly, alternately at both processes: the last destroys the record.
            var last: VaultAnswer?
            for (i, q) in answers.enumerated() {
                last = try await s.client(i % 2 == 0 ? portA : portB).unlock("carol", version: reg.version, challenge: q.challenge, proof: rnd(32))
            }
            guard case .error(let e) = last else { Issue.record("last wrong proof answered \(String(describing: last))"); return }
            #expect(e.code == .locked)
            #expect(try await s.client(portB).q0("carol").state == .locked)
            #expect(try await s.client(portA).q0("carol").state == .locked)
        }
    }

    @Test("kill -9 of one of two realm processes mid-flood: no acknowledged guess is lost, the other keeps answering")
    func killOneOfTwo() async throws {
        let binary = try RealmCrashTests.cofferBinary()
        try await PostgresTestServer.withPostgres { url in
            let s = try await Self.setup(store: url, guessLimit: 100)
            defer { try? FileManager.default.removeItem(at: s.root) }
            let (a, portA) = try await RealmCrashTests.startServer(binary: binary, dir: s.dir.url, client: s.client)
            defer { a.stop() }
            let (b, portB) = try await RealmCrashTests.startServer(binary: binary, dir: s.dir.url, client: s.client)
            defer { b.stop() }
            let reg = try await s.client(portA).register("quinn", guessLimit: 100)
            let acks = Mutex2(0), acksAfterKill = Mutex2(0), stop = Mutex2(false), killed = Mutex2(false)
            let workers = 16
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0..<workers {
                    let realm = s.client(i % 2 == 0 ? portA : portB)
                    group.addTask {
                        while !stop.withLock({ $0 }) {
                            guard let answer = try? await realm.guess("quinn", version: reg.version) else { continue }
                            if case .q1 = answer {
                                acks.withLock { $0 += 1 }
                                if killed.withLock({ $0 }) { acksAfterKill.withLock { $0 += 1 } }
                            }
                        }
                    }
                }
                while acks.withLock({ $0 }) < 10 { try await Task.sleep(for: .milliseconds(5)) }
                try await Task.sleep(for: .milliseconds(Int.random(in: 20...120)))
                a.kill9()
                killed.withLock { $0 = true }
                // The survivor goes on answering.
                let target = acks.withLock { $0 } + 10
                while acks.withLock({ $0 }) < target { try await Task.sleep(for: .milliseconds(5)) }
                stop.withLock { $0 = true }
                try await group.waitForAll()
            }
            let acknowledged = acks.withLock { $0 }
            let counted = 100 - (try await s.client(portB).attemptsLeft("quinn"))
            print("two processes, one killed: \(acknowledged) acknowledged, \(counted) counted")
            #expect(acksAfterKill.withLock { $0 } > 0)
            #expect(counted >= acknowledged, "\(acknowledged) acknowledged, \(counted) counted")
            // Committed but unanswered: at most the killed process's workers' requests in flight.
            #expect(counted <= acknowledged + workers / 2)
        }
    }

    @Test("coffer realm migrate: SQLite to PostgreSQL and back, every row identical, the realm serves from each")
    func migrateRoundTrip() async throws {
        let binary = try RealmCrashTests.cofferBinary()
        try await PostgresTestServer.withPostgres { url in
            let root = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-realm-migrate-\(UUID().uuidString)")
            defer { try? FileManager.default.removeItem(at: root) }
            let layout = RealmClusterLayout(directory: root, count: 1)
            try layout.prepare()
            let dir = layout.realmDirectory(1)
            let (keys, config) = try dir.load()
            // Some state on SQLite: records with counted guesses, a destroyed one, heads, pending registrations.
            let sqlite = try RealmStore(url: dir.databaseFile, keys: keys, config: config)
            var versions: [String: Data] = [:]
            for user in ["a", "b", "c"] { versions[user] = try await RealmStoreConformanceTests.register(sqlite, user: user, guessLimit: user == "c" ? 1 : 10) }
            for user in ["a", "c"] {
                let q = try await sqlite.query(tenant: "t", user: user, scope: .recover)
                let g = try await sqlite.guess(tenant: "t", user: user, ticket: q.ticket, version: versions[user]!, blinded: try RealmStoreTests.blinded())
                if user == "c" { _ = try await sqlite.unlock(tenant: "t", user: user, version: versions["c"]!, challenge: g.answer.challenge, proof: Data(rnd(32))) }
            }
            let h = try await sqlite.readHeads(tenant: "t", user: "a")
            _ = try await sqlite.writeHead(tenant: "t", user: "a", ticket: h.ticket, slotID: Data(rnd(16)), seq: 3, writeAuth: Data(rnd(32)),
                                           sealedHead: Data(rnd(HeadWire.sealedHead)))
            _ = try await sqlite.beginRegistration(tenant: "t", user: "b", blinded: try RealmStoreTests.blinded())
            let before = try await sqlite.exportRows().sorted()
            await sqlite.close()

            func migrate(_ args: [String]) throws -> String {
                let p = Process()
                p.executableURL = binary
                p.arguments = ["realm", "migrate", "--dir", dir.url.path] + args
                let out = Pipe()
                p.standardOutput = out
                p.standardError = out
                try p.run()
                let data = out.fileHandleForReading.readDataToEndOfFile()
                p.waitUntilExit()
                let text = String(decoding: data, as: UTF8.self)
                guard p.terminationStatus == 0 else { throw TestFailure("migrate \(args) exited \(p.terminationStatus): \(text)") }
                return text
            }
            let pg = url.withSchema("migrated").urlString()
            let there = try migrate(["--from", "sqlite", "--to", pg])
            #expect(there.contains("every row identical"))
            // Into a store that holds records: refused.
            #expect(throws: (any Error).self) { try migrate(["--from", "sqlite", "--to", pg]) }
            let back = root.appendingPathComponent("back.sqlite")
            _ = try migrate(["--from", pg, "--to", "sqlite:\(back.path)", "--update-config"])
            #expect(try RealmConfig.load(from: dir.configFile).store == "sqlite:\(back.path)")
            let returned = try RealmStore(url: back, keys: keys, config: config)
            let after = try await returned.exportRows().sorted()
            try RealmMigration.compare(before, after)
            #expect(after == before)
            #expect(try await RealmStoreConformanceTests.attemptsLeft(returned, "a") == 9)
            #expect(try await returned.peekStatus(tenant: "t", user: "c") == .locked(version: versions["c"]!))
            await returned.close()
            // The PostgreSQL copy serves: the same statuses through a store opened there.
            let onPG = try await RealmStoreLocation.postgres(try PostgresStoreURL(parsing: pg)).open(keys: keys, config: config)
            #expect(try await RealmStoreConformanceTests.attemptsLeft(onPG, "a") == 9)
            #expect(try await RealmStoreConformanceTests.attemptsLeft(onPG, "b") == 10)
            await onPG.close()
        }
    }

    @Test("/ready is 200 while PostgreSQL answers and 503 when it is down; store latency and errors in /metrics")
    func readinessAndMetrics() async throws {
        let instance = try PostgresTestServer.makeInstance(name: "ready")
        defer {
            instance.stop()
            try? FileManager.default.removeItem(at: instance.folder)
        }
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-realm-ready-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let layout = RealmClusterLayout(directory: root, count: 1, postgres: instance.url)
        let cluster = try await RealmCluster.start(layout: layout, adminBasePort: 0)
        do {
            let tenant = try await DevelopmentTenant.forConfiguration(cluster.vaultConfiguration, at: layout.vaultConfigURL)
            let r = cluster.vaultConfiguration.realms[0]
            let realm = RealmClient(url: r.url, probe: try RealmProbe(descriptor: r.descriptor), tenant: tenant,
                                    directory: cluster.realms[0].directory, adminURL: cluster.realms[0].adminURL)
            let (readyStatus, readyBody) = try await realm.getAdmin("/ready")
            #expect(readyStatus == 200 && readyBody == "ready\n")
            _ = try await realm.register("ann")
            _ = try await realm.q0("ann")
            let metrics = try await realm.getAdmin("/metrics").1
            #expect(metrics.contains(#"coffer_realm_store_duration_seconds_count{op="q0"}"#))
            #expect(metrics.contains(#"coffer_realm_store_duration_seconds_count{op="r2"}"#))
            #expect(metrics.contains("coffer_realm_store_up 1"))
            #expect(!metrics.contains("coffer_realm_store_errors_total"))

            instance.stop()
            let (status, body) = try await realm.getAdmin("/ready")
            #expect(status == 503 && body.hasPrefix("not ready"))
            // A request now fails inside (a sealed internal error), counted as a store error.
            let a = try await realm.send(.q0(Q0Request(token: try await realm.token("ann", .status))))
            guard case .error(let e) = a else { Issue.record("q0 with the database down answered \(a)"); return }
            #expect(e.code == .internalError)
            let down = try await realm.getAdmin("/metrics").1
            #expect(down.contains("coffer_realm_store_up 0"))
            #expect(down.contains(#"coffer_realm_store_errors_total{op="ready"}"#))
            #expect(down.contains(#"coffer_realm_store_errors_total{op="q0"}"#) || down.contains(#"coffer_realm_store_errors_total{op="replay_check"}"#))

            try instance.start()
            // The connection pool reconnects with a backoff, and a loaded machine restarts
            // PostgreSQL slowly: up to 60 s (it took 4-8 s here on an idle machine).
            var ready = false
            let restarted = ContinuousClock.now
            while !ready && ContinuousClock.now - restarted < .seconds(60) {
                ready = (try? await realm.getAdmin("/ready").0) == 200
                if !ready { try await Task.sleep(for: .milliseconds(100)) }
            }
            print("/ready: 200 again \(ContinuousClock.now - restarted) after PostgreSQL came back")
            #expect(ready, "the realm never became ready again after the database came back")
            #expect(try await realm.attemptsLeft("ann") == 10)
        } catch {
            await cluster.stop()
            throw error
        }
        await cluster.stop()
    }

    @Test("SIGTERM mid-flood: in-flight guesses finish before the store closes, every answered guess counted and nothing more")
    func gracefulShutdownFinishesGuesses() async throws {
        let binary = try RealmCrashTests.cofferBinary()
        try await PostgresTestServer.withPostgres { url in
            let s = try await Self.setup(store: url, guessLimit: 100)
            defer { try? FileManager.default.removeItem(at: s.root) }
            let (a, port) = try await RealmCrashTests.startServer(binary: binary, dir: s.dir.url, client: s.client)
            defer { a.stop() }
            let reg = try await s.client(port).register("gina", guessLimit: 100)
            let acks = Mutex2(0), q0s = Mutex2(0), stop = Mutex2(false)
            let realm = s.client(port)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<12 {
                    group.addTask {
                        while !stop.withLock({ $0 }) {
                            // Q0 first, then the Q1 that may be in flight at the SIGTERM.
                            guard let q = try? await realm.q0("gina") else { continue }
                            q0s.withLock { $0 += 1 }
                            let blinded = try VaultOPRF.blind(rnd(32))
                            guard let token = try? await realm.token("gina", .recover),
                                  let answer = try? await realm.send(.q1(Q1Request(token: token, ticket: q.ticket, version: reg.version,
                                                                                    blindedElement: blinded.blindedElementBytes)))
                            else { continue }
                            if case .q1 = answer { acks.withLock { $0 += 1 } }
                        }
                    }
                }
                while acks.withLock({ $0 }) < 10 { try await Task.sleep(for: .milliseconds(5)) }
                a.process.terminate()   // SIGTERM: graceful
                a.process.waitUntilExit()
                stop.withLock { $0 = true }
                try await group.waitForAll()
            }
            #expect(a.process.terminationStatus == 0, "serve exited with \(a.process.terminationStatus): \(a.stderr)")
            let acknowledged = acks.withLock { $0 }
            let (b, port2) = try await RealmCrashTests.startServer(binary: binary, dir: s.dir.url, client: s.client)
            defer { b.stop() }
            let counted = 100 - (try await s.client(port2).attemptsLeft("gina"))
            print("graceful shutdown: \(acknowledged) answered, \(counted) counted")
            // Nothing committed without its answer being delivered: a graceful stop loses no answer.
            #expect(counted == acknowledged)
        }
    }

    @Test("the database killed mid-flood: every store call returns (an error once it is gone), none hangs", .timeLimit(.minutes(2)))
    func databaseKilledMidFlood() async throws {
        let instance = try PostgresTestServer.makeInstance(name: "kill")
        defer {
            instance.stop()
            try? FileManager.default.removeItem(at: instance.folder)
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-realm-pgkill-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let (keys, config) = try RealmDirectory(dir).initialize(x: 1, guessLimit: 100)
        let store = try await RealmStoreLocation.postgres(instance.url).open(keys: keys, config: config)
        let version = try await RealmStoreConformanceTests.register(store, guessLimit: 100)
        let ok = Mutex2(0), failed = Mutex2(0)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<8 {
                group.addTask {
                    while true {
                        do {
                            let q = try await store.query(tenant: "t", user: "u", scope: .recover)
                            _ = try await store.guess(tenant: "t", user: "u", ticket: q.ticket, version: version, blinded: try RealmStoreTests.blinded())
                            ok.withLock { $0 += 1 }
                        } catch {
                            failed.withLock { $0 += 1 }
                            return
                        }
                    }
                }
            }
            while ok.withLock({ $0 }) < 10 { try await Task.sleep(for: .milliseconds(5)) }
            instance.stop()   // immediate: queries in flight lose their server
            try await group.waitForAll()
        }
        #expect(failed.withLock { $0 } == 8)
        await store.close()
    }

    @Test("a store created before coffer_guess_v1 existed gets it at its next open, and guesses go through it")
    func guessFunctionMigration() async throws {
        let instance = try PostgresTestServer.makeInstance(name: "fn")
        defer {
            instance.stop()
            try? FileManager.default.removeItem(at: instance.folder)
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-realm-pgfn-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let (keys, config) = try RealmDirectory(dir).initialize(x: 1)
        let location = RealmStoreLocation.postgres(instance.url.withSchema("older"))
        let store = try await location.open(keys: keys, config: config)
        let version = try await RealmStoreConformanceTests.register(store)
        // The schema as the store created it before this function: the same tables, no function.
        let functions = "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'older' AND p.proname = 'coffer_guess_v1'"
        #expect(try instance.psql(functions) == "1")
        _ = try instance.psql("DROP FUNCTION older.coffer_guess_v1")
        #expect(try instance.psql(functions) == "0")
        // A guess calls it: on the store opened before it was dropped, the guess fails and counts nothing.
        let q = try await store.query(tenant: "t", user: "u", scope: .recover)
        await #expect(throws: (any Error).self) {
            _ = try await store.guess(tenant: "t", user: "u", ticket: q.ticket, version: version, blinded: try RealmStoreTests.blinded())
        }
        #expect(try await RealmStoreConformanceTests.attemptsLeft(store) == 10)
        #expect(try instance.psql("SELECT count(*) FROM older.ticket WHERE sealed IS NOT NULL") == "0")
        await store.close()
        // Opening the store again (a realm process starting with this code) creates it, and a second
        // open (another process) replaces it idempotently under the migration lock.
        let reopened = try await location.open(keys: keys, config: config)
        let other = try await location.open(keys: keys, config: config)
        #expect(try instance.psql(functions) == "1")
        let q2 = try await reopened.query(tenant: "t", user: "u", scope: .recover)
        let g = try await reopened.guess(tenant: "t", user: "u", ticket: q2.ticket, version: version, blinded: try RealmStoreTests.blinded())
        #expect(!g.retried && g.answer.attemptsLeft == 9)
        #expect(try await RealmStoreConformanceTests.attemptsLeft(other) == 9)
        #expect(try instance.psql("SELECT count(*) FROM older.ticket WHERE sealed IS NOT NULL") == "1")
        #expect(try instance.psql("SELECT count(*) FROM older.challenge") == "1")
        await other.close()
        await reopened.close()
    }

    @Test("/ready on the SQLite store is 200")
    func readySQLite() async throws {
        let t = try await RealmTestCluster.start()
        do {
            let (status, body) = try await t.realm().getAdmin("/ready")
            #expect(status == 200 && body == "ready\n")
        } catch {
            await t.stop()
            throw error
        }
        await t.stop()
    }
}
