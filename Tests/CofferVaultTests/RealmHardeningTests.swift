import CofferRealm
import CofferVault
import Foundation
import GRDB
import Logging
import Testing

/// Realm hardening (issue 11, problems 5 and 6): replays of every message type change nothing,
/// cheap refusals come before curve operations, rate limits answer `busy`, and the operator's
/// endpoints live on their own listener.
@Suite("Realm hardening", .serialized)
struct RealmHardeningTests {
    /// Rows of `table` in the realm's SQLite file (read-only, beside the running realm).
    static func rows(_ table: String, _ realm: RealmClient) throws -> Int {
        let db = try DatabaseQueue(path: realm.directory.databaseFile.path,
                                   configuration: { var c = Configuration(); c.readonly = true; return c }())
        return try db.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM \(table)") ?? 0 }
    }

    @Test("a replayed Q0 writes no ticket, before or after a restart, and concurrent copies write one")
    func q0Replay() async throws {
        let t = try await RealmTestCluster.start()
        try await stopping(t) {
            let realm = t.realm()
            let reg = try await realm.register("ana")
            let (bytes, opener) = try realm.probe.seal(.q0(Q0Request(token: try await realm.token("ana", .status))))
            guard case .q0(let first) = try await realm.sendSealed(bytes, opener: opener, type: .q0) else {
                Issue.record("Q0 failed"); return
            }
            #expect(first.version == reg.version)
            let tickets = try Self.rows("ticket", realm)
            for _ in 0..<5 {
                let again = try await realm.sendSealed(bytes, opener: opener, type: .q0)
                #expect(again == .error(RealmErrorAnswer(code: .badTicket, currentVersion: reg.version)))
            }
            #expect(try Self.rows("ticket", realm) == tickets, "a replayed Q0 wrote a durable ticket")

            // The realm remembers it across a restart (the mark is in its database, not its memory).
            await t.cluster.realms[0].stop()
            try await restart(t.cluster.realms[0])
            #expect(try await realm.sendSealed(bytes, opener: opener, type: .q0)
                    == .error(RealmErrorAnswer(code: .badTicket, currentVersion: reg.version)))
            #expect(try Self.rows("ticket", realm) == tickets)

            // Eight copies of one fresh request at once: exactly one is served.
            let (fresh, freshOpener) = try realm.probe.seal(.q0(Q0Request(token: try await realm.token("ana", .status))))
            let answers = try await withThrowingTaskGroup(of: VaultAnswer.self) { group in
                for _ in 0..<8 { group.addTask { try await realm.sendSealed(fresh, opener: freshOpener, type: .q0) } }
                return try await group.reduce(into: [VaultAnswer]()) { $0.append($1) }
            }
            #expect(answers.filter { if case .q0 = $0 { return true } else { return false } }.count == 1)
            #expect(try Self.rows("ticket", realm) == tickets + 1)
            // A client's own new request (a fresh sealing of the same body) is served as usual.
            #expect(try await realm.q0("ana", scope: .status).version == reg.version)
        }
    }

    @Test("replayed R1s cannot push a registration in progress out; its R2 still completes")
    func r1ReplayKeepsPending() async throws {
        let t = try await RealmTestCluster.start()
        try await stopping(t) {
            let realm = t.realm()
            let token = try await realm.token("bea", .register)
            let current = try await realm.q0("bea", scope: .register)
            let blinded = try VaultOPRF.blind(Array("pw".utf8))
            let (bytes, opener) = try realm.probe.seal(.r1(R1Request(token: token, blindedElement: blinded.blindedElementBytes)))
            guard case .r1(let r1) = try await realm.sendSealed(bytes, opener: opener, type: .r1) else { Issue.record("R1 failed"); return }
            #expect(try Self.rows("pending", realm) == 1)

            // Before the fix, four replays made four pending keys and the realm dropped the real one.
            for _ in 0..<6 {
                #expect(try await realm.sendSealed(bytes, opener: opener, type: .r1) == .error(RealmErrorAnswer(code: .badTicket)))
            }
            #expect(try Self.rows("pending", realm) == 1, "replayed R1s wrote pending registrations")

            let version = RecordVersion.random()
            let r2 = R2Request(token: token, pendingID: r1.pendingID, expectedVersion: current.version, version: version,
                               maskedShare: rnd(32), commitment: rnd(32), verificationKey: rnd(32), signature: rnd(64),
                               unlockTag: rnd(32), wrappedKey: rnd(60), policy: try VaultPolicy(log2N: 15, guessLimit: 10))
            let (r2bytes, r2opener) = try realm.probe.seal(.r2(r2))
            #expect(try await realm.sendSealed(r2bytes, opener: r2opener, type: .r2) == .r2(R2Answer(version: version)))
            #expect(try await realm.sendSealed(r2bytes, opener: r2opener, type: .r2)
                    == .error(RealmErrorAnswer(code: .badPending, currentVersion: version)))
            #expect(try await realm.q0("bea").version == version)
        }
    }

    @Test("a replayed head read issues no ticket")
    func headReadReplay() async throws {
        let t = try await RealmTestCluster.start()
        try await stopping(t) {
            let realm = t.realm()
            let (bytes, opener) = try realm.probe.seal(.headRead(HeadReadRequest(token: try await realm.token("cid", .head))))
            guard case .headRead = try await realm.sendSealed(bytes, opener: opener, type: .headRead) else { Issue.record("head read failed"); return }
            let tickets = try Self.rows("ticket", realm)
            #expect(try await realm.sendSealed(bytes, opener: opener, type: .headRead) == .error(RealmErrorAnswer(code: .badTicket)))
            #expect(try Self.rows("ticket", realm) == tickets)
        }
    }

    @Test("a Q1 with a bad ticket is refused before any VOPRF evaluation; a replayed or retried Q1 costs none either")
    func badTicketCostsNoEvaluation() async throws {
        let t = try await RealmTestCluster.start()
        try await stopping(t) {
            let realm = t.realm()
            let store = try #require(t.cluster.realms[0].service?.store)
            let reg = try await realm.register("dan")
            _ = try await realm.register("eve")
            let token = try await realm.token("dan", .recover)
            let blinded = try VaultOPRF.blind(rnd(16)).blindedElementBytes
            let before = store.oprfEvaluations

            let bad: [(String, Ticket)] = [
                ("made up", .random()),
                ("another user's", try await realm.q0("eve").ticket),
                ("delete-scoped", try await realm.q0("dan", scope: .delete).ticket),
            ]
            for (what, ticket) in bad {
                let a = try await realm.send(.q1(Q1Request(token: token, ticket: ticket, version: reg.version, blindedElement: blinded)))
                #expect(a == .error(RealmErrorAnswer(code: .badTicket, currentVersion: reg.version)), "\(what)")
            }
            #expect(store.oprfEvaluations == before, "a Q1 with a bad ticket ran the P-384 evaluation")

            // Positive control: a good ticket costs exactly one evaluation; its replay and its retry none.
            let q = try await realm.q0("dan")
            let q1 = Q1Request(token: token, ticket: q.ticket, version: reg.version, blindedElement: blinded)
            let (bytes, opener) = try realm.probe.seal(.q1(q1))
            guard case .q1(let answer) = try await realm.sendSealed(bytes, opener: opener, type: .q1) else { Issue.record("Q1 failed"); return }
            #expect(store.oprfEvaluations == before + 1)
            #expect(try await realm.sendSealed(bytes, opener: opener, type: .q1) == .error(RealmErrorAnswer(code: .badTicket, currentVersion: reg.version)))
            #expect(try await realm.send(.q1(q1)) == .q1(answer))
            #expect(store.oprfEvaluations == before + 1)
            #expect(try await realm.attemptsLeft("dan") == 9)
        }
    }

    /// One realm served in-process (the same `handle` the HTTP edge calls) with a hand-moved clock,
    /// so limits are tested by counts, never by timing.
    struct InProcessRealm {
        let root: URL
        let service: RealmService
        let probe: RealmProbe
        let tenant: DevelopmentTenant
        let clock: RealmStoreTests.TestClock
        let databaseFile: URL

        init(logger: Logger? = nil, limits: RealmConfig.Limits? = nil) async throws {
            root = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-realm-limits-\(UUID().uuidString)")
            let layout = RealmClusterLayout(directory: root, count: 1, limits: limits)
            try layout.prepare()
            databaseFile = layout.realmDirectory(1).databaseFile
            let clock = RealmStoreTests.TestClock()
            self.clock = clock
            service = try await RealmService(directory: layout.realmDirectory(1), logger: logger, now: { clock.now })
            let k = service.keys.hpkeKeys[0]
            probe = RealmProbe(realmID: service.realmID, key: try RealmPublicKey(id: k.id, rawRepresentation: Array(k.publicKey.rawRepresentation)))
            tenant = try await DevelopmentTenant(tenant: VaultConfiguration.developmentTenantName,
                                                 privateKeyPEM: try String(contentsOf: layout.tenantKeyURL, encoding: .utf8))
        }

        func token(_ user: String, _ scope: VaultScope = .status) async throws -> String {
            try await tenant.token(user: user, realmID: service.realmID, scope: scope)
        }

        /// Sends Q0s with `token()` for each; returns (served, busy).
        func q0s(_ n: Int, token: () async throws -> String) async throws -> (served: Int, busy: Int) {
            var served = 0, busy = 0
            for _ in 0..<n {
                switch try await probe.exchange(.q0(Q0Request(token: try await token())), with: service) {
                case .q0: served += 1
                case .error(let e) where e.code == .busy: busy += 1
                case let other: Issue.record("Q0 answered \(other)")
                }
            }
            return (served, busy)
        }

        func tickets() throws -> Int {
            let db = try DatabaseQueue(path: databaseFile.path,
                                       configuration: { var c = Configuration(); c.readonly = true; return c }())
            return try db.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM ticket") ?? 0 }
        }

        func metric(_ name: String) -> Double? {
            service.metrics.render().split(separator: "\n").first { $0.hasPrefix(name + " ") }.flatMap { Double($0.split(separator: " ").last!) }
        }

        func remove() { try? FileManager.default.removeItem(at: root) }
    }

    @Test("a flood of Q0 under one token is limited: 30 durable tickets, then busy; the budget refills with time")
    func q0FloodUnderOneToken() async throws {
        let r = try await InProcessRealm()
        defer { r.remove() }
        let token = try await r.token("flo")
        let flood = try await r.q0s(100) { token }
        #expect(flood.served == 30 && flood.busy == 70, "\(flood)")
        #expect(try r.tickets() == 30, "a busy Q0 must not write a ticket")
        #expect(r.metric("coffer_realm_busy_total") == 70)
        // 10 seconds at 30 a minute: 5 more.
        r.clock.advance(10)
        let later = try await r.q0s(20) { token }
        #expect(later.served == 5 && later.busy == 15, "\(later)")
        #expect(try r.tickets() == 35)
        // Another user's token is not affected.
        let other = try await r.token("gil")
        #expect(try await r.q0s(3) { other }.served == 3)
    }

    @Test("a served request is remembered until its token expires, sweeps included, then forgotten")
    func markLivesAsLongAsTheToken() async throws {
        let r = try await InProcessRealm()
        defer { r.remove() }
        // Development tokens live 5 minutes (real time; the realm's store clock is moved by hand).
        let (bytes, opener) = try r.probe.seal(.q0(Q0Request(token: try await r.token("kai"))))
        func send() async throws -> VaultAnswer {
            guard case .sealed(let a) = await r.service.handle(type: .q0, request: bytes) else { throw TestFailure("did not open") }
            return try r.probe.open(a, opener: opener, type: .q0)
        }
        guard case .q0 = try await send() else { Issue.record("Q0 failed"); return }
        #expect(try await r.service.store.servedCount() == 1)
        r.clock.advance(4 * 60)
        try await r.service.store.sweep()
        #expect(try await send() == .error(RealmErrorAnswer(code: .badTicket)))
        #expect(try await r.service.store.servedCount() == 1)
        // Past the token's expiry the sweep forgets it (the token itself is refused by then).
        r.clock.advance(2 * 60)
        try await r.service.store.sweep()
        #expect(try await r.service.store.servedCount() == 0)
        #expect(try r.tickets() == 0)
    }

    @Test("over HTTP: limits from realm.json, busy sealed and padded like any answer, no ticket written")
    func busyOverHTTP() async throws {
        // Refill so slow (one unit in 1000 minutes) that the count cannot depend on how fast this runs.
        let limits = RealmConfig.Limits(perToken: .init(burst: 2, perMinute: 0.001), perUser: .init(burst: 100, perMinute: 0.001),
                                        refusedTokenLogLinesPerMinute: 10)
        let t = try await RealmTestCluster.start(limits: limits)
        try await stopping(t) {
            let realm = t.realm()
            let token = try await realm.token("lea", .status)
            let (good, goodOpener) = try realm.probe.seal(.q0(Q0Request(token: token)))
            let (_, goodBody) = try await realm.post("/v1/q0", good)
            guard case .q0 = try realm.probe.open(goodBody, opener: goodOpener, type: .q0) else { Issue.record("Q0 failed"); return }
            guard case .q0 = try await realm.send(.q0(Q0Request(token: token))) else { Issue.record("second Q0 failed"); return }
            let tickets = try Self.rows("ticket", realm)
            for _ in 0..<5 {
                let (bytes, opener) = try realm.probe.seal(.q0(Q0Request(token: token)))
                let (status, body) = try await realm.post("/v1/q0", bytes)
                #expect(status == 200 && body.count == goodBody.count)
                #expect(try realm.probe.open(body, opener: opener, type: .q0) == .error(RealmErrorAnswer(code: .busy)))
            }
            #expect(try Self.rows("ticket", realm) == tickets)
            let (_, metrics) = try await realm.getAdmin("/metrics")
            #expect(metrics.contains("coffer_realm_busy_total 5"))
            // Another token of the same user still has its own two.
            #expect(try await realm.q0("lea", scope: .status).state == .none)
        }
    }

    @Test("a user's tokens share one limit: fresh tokens for each request stop at 120")
    func perUserLimit() async throws {
        let r = try await InProcessRealm()
        defer { r.remove() }
        let flood = try await r.q0s(130) { try await r.token("hal") }
        #expect(flood.served == 120 && flood.busy == 10, "\(flood)")
        #expect(try r.tickets() == 120)
    }

    @Test("limits come from realm.json; busy costs nothing: no evaluation, no ticket, no guess")
    func configuredLimits() async throws {
        let limits = RealmConfig.Limits(perToken: .init(burst: 3, perMinute: 1), perUser: .init(burst: 4, perMinute: 1),
                                        refusedTokenLogLinesPerMinute: 10)
        let r = try await InProcessRealm(limits: limits)
        defer { r.remove() }
        #expect(r.service.config.effectiveLimits == limits)
        // Register (Q0, R1, R2: 3 of the user's 4), then a recover token: its Q0 takes the last one.
        let reg = try await r.token("ida", .register)
        guard case .q0(let q) = try await r.probe.exchange(.q0(Q0Request(token: reg)), with: r.service),
              case .r1(let r1) = try await r.probe.exchange(.r1(R1Request(token: reg, blindedElement: try VaultOPRF.blind(rnd(8)).blindedElementBytes)), with: r.service)
        else { Issue.record("registration failed"); return }
        let version = RecordVersion.random()
        let r2 = R2Request(token: reg, pendingID: r1.pendingID, expectedVersion: q.version, version: version,
                           maskedShare: rnd(32), commitment: rnd(32), verificationKey: rnd(32), signature: rnd(64),
                           unlockTag: rnd(32), wrappedKey: rnd(60), policy: try VaultPolicy(log2N: 15, guessLimit: 10))
        #expect(try await r.probe.exchange(.r2(r2), with: r.service) == .r2(R2Answer(version: version)))
        let rec = try await r.token("ida", .recover)
        guard case .q0(let q2) = try await r.probe.exchange(.q0(Q0Request(token: rec)), with: r.service) else { Issue.record("Q0"); return }
        // The user's budget is spent: the Q1 is busy, and it cost no evaluation and no guess.
        let evaluations = r.service.store.oprfEvaluations
        let q1 = Q1Request(token: rec, ticket: q2.ticket, version: version, blindedElement: try VaultOPRF.blind(rnd(8)).blindedElementBytes)
        #expect(try await r.probe.exchange(.q1(q1), with: r.service) == .error(RealmErrorAnswer(code: .busy)))
        #expect(r.service.store.oprfEvaluations == evaluations)
        // A minute later the same Q1 (its ticket unspent) is served, with its first guess.
        r.clock.advance(60)
        guard case .q1(let a) = try await r.probe.exchange(.q1(q1), with: r.service) else { Issue.record("Q1 after refill"); return }
        #expect(a.attemptsLeft == 9)
    }

    @Test("refused tokens are logged at most N lines a minute; the rest are counted and summed up")
    func refusedTokenLogIsLimited() async throws {
        let capture = RealmLogTests.Capture()
        let logger = Logger(label: "test") { _ in RealmLogTests.CaptureHandler(capture: capture) }
        let r = try await InProcessRealm(logger: logger)
        defer { r.remove() }
        for _ in 0..<25 {
            #expect(try await r.probe.exchange(.q0(Q0Request(token: "not.a.token")), with: r.service) == .error(RealmErrorAnswer(code: .badToken)))
        }
        func lines(_ text: String) -> [String] { capture.lines.withLock { $0 }.filter { $0.contains(text) } }
        #expect(lines("token refused").count == 10)
        #expect(lines("token refusals not logged").isEmpty)
        r.clock.advance(61)
        _ = try await r.probe.exchange(.q0(Q0Request(token: "not.a.token")), with: r.service)
        #expect(lines("token refused").count == 11)
        let summary = lines("token refusals not logged")
        #expect(summary.count == 1 && summary.first?.contains("count=15") == true, "\(summary)")
        #expect(r.metric("coffer_realm_token_refusals_total") == 26)
    }

    @Test("in-process realms: /health and /metrics answer on the admin listener only, the protocol on the public one only")
    func adminListenerInProcess() async throws {
        let t = try await RealmTestCluster.start()
        try await stopping(t) {
            let realm = t.realm()
            let admin = try #require(realm.adminURL)
            #expect(admin != realm.url)
            _ = try await realm.register("joy")
            for path in ["/metrics", "/health", "/v1/health"] {
                #expect(try await realm.get(path).0 == 404, "public \(path)")
            }
            let (hs, health) = try await realm.getAdmin("/health")
            #expect(hs == 200 && health == "ok\n")
            let (ms, metrics) = try await realm.getAdmin("/metrics")
            #expect(ms == 200 && metrics.contains("coffer_realm_registrations_total 1"))
            // The admin listener serves nothing else: no descriptor, no protocol endpoint.
            #expect(try await realm.getAdmin("/v1/descriptor").0 == 404)
            let (bytes, _) = try realm.probe.seal(.q0(Q0Request(token: try await realm.token("joy", .status))))
            let atAdmin = RealmClient(url: admin, probe: realm.probe, tenant: realm.tenant, directory: realm.directory)
            #expect(try await atAdmin.post("/v1/q0", bytes).0 == 404)
        }
    }

    @Test("coffer realm serve: the admin listener from --admin-listen or realm.json adminListen; none on the public port; a bad address is refused")
    func serveAdminListener() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-realm-admin-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let layout = RealmClusterLayout(directory: root, count: 1)
        try layout.prepare()
        let dir = layout.realmDirectory(1)

        // 1. --admin-listen. Port 0 everywhere: the realm binds free ports itself and prints them.
        let binary = try RealmCrashTests.cofferBinary()
        let p1 = try RealmCrashTests.Server(binary: binary, arguments: ["--dir", dir.url.path, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        defer { p1.stop() }
        let port = try await p1.port(), adminPort = try await p1.adminPort()
        #expect(port != adminPort)
        #expect(try await RealmClient.get("http://127.0.0.1:\(adminPort)/health").0 == 200)
        #expect(try await RealmClient.get("http://127.0.0.1:\(port)/v1/descriptor").0 == 200)
        #expect(try await RealmClient.get("http://127.0.0.1:\(port)/metrics").0 == 404)
        #expect(try await RealmClient.get("http://127.0.0.1:\(port)/health").0 == 404)
        let (ms, metrics) = try await RealmClient.get("http://127.0.0.1:\(adminPort)/metrics")
        #expect(ms == 200 && metrics.contains("coffer_realm_busy_total"))
        p1.stop()

        // 2. adminListen in realm.json (no flag).
        var config = try RealmConfig.load(from: dir.configFile)
        config.adminListen = "127.0.0.1:0"
        try config.save(to: dir.configFile)
        let p2 = try RealmCrashTests.Server(binary: binary, arguments: ["--dir", dir.url.path, "--listen", "127.0.0.1:0"])
        defer { p2.stop() }
        let port2 = try await p2.port(), adminPort2 = try await p2.adminPort()
        #expect(try await RealmClient.get("http://127.0.0.1:\(adminPort2)/health").0 == 200)
        #expect(try await RealmClient.get("http://127.0.0.1:\(port2)/metrics").0 == 404)
        p2.stop()

        // 3. A bad --admin-listen: a clear error, nothing served.
        let p3 = try RealmCrashTests.Server(binary: binary, arguments: ["--dir", dir.url.path, "--listen", "127.0.0.1:0", "--admin-listen", "localhost"])
        p3.process.waitUntilExit()
        try await Task.sleep(for: .milliseconds(100))   // the pipe's last bytes
        let message = p3.stderr
        #expect(p3.process.terminationStatus != 0)
        #expect(message.contains("--admin-listen must be HOST:PORT"), "\(message)")
        // And a bad adminListen in realm.json is refused when the realm loads its configuration.
        config.adminListen = "nonsense"
        try config.save(to: dir.configFile)
        #expect(throws: RealmFileError.self) { _ = try RealmConfig.load(from: dir.configFile) }
    }
}
