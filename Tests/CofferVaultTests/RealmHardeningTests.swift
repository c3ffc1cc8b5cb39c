import CofferRealm
import CofferVault
import Foundation
import GRDB
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
        defer { Task { await t.stop() } }
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
        try await t.cluster.realms[0].start()
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

    @Test("replayed R1s cannot push a registration in progress out; its R2 still completes")
    func r1ReplayKeepsPending() async throws {
        let t = try await RealmTestCluster.start()
        defer { Task { await t.stop() } }
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

    @Test("a replayed head read issues no ticket")
    func headReadReplay() async throws {
        let t = try await RealmTestCluster.start()
        defer { Task { await t.stop() } }
        let realm = t.realm()
        let (bytes, opener) = try realm.probe.seal(.headRead(HeadReadRequest(token: try await realm.token("cid", .head))))
        guard case .headRead = try await realm.sendSealed(bytes, opener: opener, type: .headRead) else { Issue.record("head read failed"); return }
        let tickets = try Self.rows("ticket", realm)
        #expect(try await realm.sendSealed(bytes, opener: opener, type: .headRead) == .error(RealmErrorAnswer(code: .badTicket)))
        #expect(try Self.rows("ticket", realm) == tickets)
    }

    @Test("a Q1 with a bad ticket is refused before any VOPRF evaluation; a replayed or retried Q1 costs none either")
    func badTicketCostsNoEvaluation() async throws {
        let t = try await RealmTestCluster.start()
        defer { Task { await t.stop() } }
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
