import CofferRealm
import CofferVault
import Foundation
import GRDB
import Testing

/// Guess accounting at real realms over loopback HTTP.
@Suite("Realm guess accounting", .serialized)
struct RealmGuessTests {
    @Test("a wrong password costs exactly one guess; the right proof resets the count and returns W")
    func oneGuessPerAttempt() async throws {
        let t = try await RealmTestCluster.start()
        try await stopping(t) {
            let realm = t.realm()
            let reg = try await realm.register("alice")
            #expect(try await realm.attemptsLeft("alice") == 10)

            let a = try await realm.wrongRound("alice", version: reg.version)
            guard case .error(let e) = a else { Issue.record("wrong proof answered \(a)"); return }
            #expect(e.code == .unlockFailed)
            #expect(e.attemptsLeft == 9)
            #expect(try await realm.attemptsLeft("alice") == 9)

            // Two more wrong rounds: 7 left. Q0 itself never costs a guess.
            _ = try await realm.wrongRound("alice", version: reg.version)
            _ = try await realm.wrongRound("alice", version: reg.version)
            for _ in 0..<3 { _ = try await realm.q0("alice") }
            #expect(try await realm.attemptsLeft("alice") == 7)

            // The right proof: W back, attempts reset.
            guard case .q1(let q1) = try await realm.guess("alice", version: reg.version) else { Issue.record("no Q1 answer"); return }
            #expect(q1.attemptsLeft == 6)
            #expect(q1.maskedShare == reg.maskedShare)
            let ok = try await realm.unlock("alice", version: reg.version, challenge: q1.challenge,
                                            proof: realm.proof(tag: reg.tag, version: reg.version, challenge: q1.challenge))
            #expect(ok == .q2(Q2Answer(wrappedKey: reg.wrapped)))
            #expect(try await realm.attemptsLeft("alice") == 10)
        }
    }

    @Test("after L wrong guesses the record is destroyed in the SQLite file and the right proof fails")
    func destroyedAfterLimit() async throws {
        let t = try await RealmTestCluster.start()
        try await stopping(t) {
            let realm = t.realm()
            let reg = try await realm.register("bob", guessLimit: 4)
            let before = try #require(try realm.storedRow("bob"))
            #expect(before.sealed.count > 300)  // live key material

            for i in 1...3 {
                let a = try await realm.wrongRound("bob", version: reg.version)
                #expect(a == .error(RealmErrorAnswer(code: .unlockFailed, currentVersion: reg.version, attemptsLeft: UInt8(4 - i))))
            }
            // The last guess: its wrong proof destroys the record at once.
            let last = try await realm.wrongRound("bob", version: reg.version)
            #expect(last == .error(RealmErrorAnswer(code: .locked, currentVersion: reg.version)))

            // In the file: a tombstone (kind 2) that holds only the version; no key, share, tag or W.
            let keys = try RealmKeys.load(from: realm.directory.keyFile)
            let row = try #require(try realm.storedRow("bob"))
            let plain = try RealmTestCluster.openRecord(keys: keys, recordKey: RealmTestCluster.recordKey(keys: keys, tenant: t.tenant.tenant, user: "bob"),
                                                        gen: row.gen, sealed: row.sealed)
            #expect(plain[1] == 2)
            #expect(Data(plain).contains(bytes: reg.version.bytes))
            #expect(!Data(plain).contains(bytes: reg.tag))
            #expect(!Data(plain).contains(bytes: reg.wrapped))
            #expect(!Data(plain).contains(bytes: reg.maskedShare))
            #expect(plain.count < 64)

            // Q0 says locked; a guess with a fresh ticket is refused as locked and W never comes back.
            let q = try await realm.q0("bob")
            #expect(q.state == .locked)
            let g = try await realm.guess("bob", version: reg.version)
            #expect(g == .error(RealmErrorAnswer(code: .locked, currentVersion: reg.version)))
        }
    }

    @Test("the last guess's challenge expiring destroys the record (Q0 applies the rule)")
    func destroyedWhenLastChallengeExpires() async throws {
        // A store with a 1-second challenge lifetime and a hand-moved clock, driven directly (the HTTP path is the same code).
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-realm-exp-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let (keys, config) = try RealmDirectory(dir).initialize(x: 1)
        var limits = RealmStore.Limits(guessLimit: 10)
        limits.challengeLifetime = 1
        let clock = RealmStoreTests.TestClock()
        let store = try RealmStore(url: RealmDirectory(dir).databaseFile, keys: keys, config: config, limits: limits, now: { clock.now })
        let r1 = try await store.beginRegistration(tenant: "t", user: "u", blinded: Data(try VaultOPRF.blind([1]).blindedElementBytes))
        try await store.completeRegistration(tenant: "t", user: "u", pendingID: r1.pendingID, expectedVersion: nil,
                                             fields: RegistrationFields(version: Data(rnd(16)), c: Data(rnd(32)), commitment: Data(rnd(32)), vk: Data(rnd(32)),
                                                                        sig: Data(rnd(64)), tag: Data(rnd(32)), wrapped: Data(rnd(60)), policy: Data(VaultPolicy.default.bytes), guessLimit: 2))
        guard case .active(let version, _, _, _, _) = try await store.peekStatus(tenant: "t", user: "u") else { Issue.record("not active"); return }
        for _ in 0..<2 {
            let q = try await store.query(tenant: "t", user: "u", scope: .recover)
            _ = try await store.guess(tenant: "t", user: "u", ticket: q.ticket, version: version, blinded: Data(try VaultOPRF.blind(rnd(8)).blindedElementBytes))
        }
        // Both challenges live: not destroyed yet (a correct proof could still unlock).
        #expect(try await store.query(tenant: "t", user: "u", scope: .status).status != .locked(version: version))
        clock.advance(1.3)
        let after = try await store.query(tenant: "t", user: "u", scope: .status)
        #expect(after.status == .locked(version: version))
        #expect(after.destroyed)
    }

    @Test("200 concurrent wrong guesses at one user: the realm answers at most L")
    func concurrentFlood() async throws {
        // 400 requests for one user at once: above the default per-user request limit, which this
        // test is not about (RealmHardeningTests is), so it is raised.
        let t = try await RealmTestCluster.start(limits: .unlimitedForBenchmarks)
        try await stopping(t) {
            let realm = t.realm()
            let reg = try await realm.register("carol")
            let results = try await withThrowingTaskGroup(of: Bool.self) { group in
                for _ in 0..<200 {
                    group.addTask {
                        if case .q1 = try await realm.guess("carol", version: reg.version) { return true }
                        return false
                    }
                }
                return try await group.reduce(into: [Bool]()) { $0.append($1) }
            }
            let answered = results.filter { $0 }.count
            #expect(answered == 10, "answered \(answered) guesses")
            #expect(try await realm.attemptsLeft("carol") == 0)
        }
    }
}
