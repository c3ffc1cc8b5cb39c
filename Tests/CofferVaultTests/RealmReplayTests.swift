import CofferRealm
import CofferVault
import Foundation
import Testing

/// Replays of state-changing requests: refused, and they spend nothing. A client's retried guess
/// (the same Q1 sealed afresh) gets its stored answer again (a lost response costs no guess); a
/// byte-identical copy of a served request is refused (RealmHardeningTests covers every type).
@Suite("Realm replays", .serialized)
struct RealmReplayTests {
    @Test("a replayed guess is refused, a retried one gets the stored answer without a second increment; any other ticket reuse is refused")
    func guessReplay() async throws {
        let t = try await RealmTestCluster.start()
        try await stopping(t) {
            let realm = t.realm()
            let reg = try await realm.register("erin")
            let q = try await realm.q0("erin")
            let token = try await realm.token("erin", .recover)
            let blinded = try VaultOPRF.blind(rnd(16)).blindedElementBytes
            let q1 = Q1Request(token: token, ticket: q.ticket, version: reg.version, blindedElement: blinded)

            // The very same sealed bytes, posted twice (what a proxy could replay).
            let (bytes, opener) = try realm.probe.seal(.q1(q1))
            let first = try await realm.sendSealed(bytes, opener: opener, type: .q1)
            let replayed = try await realm.sendSealed(bytes, opener: opener, type: .q1)
            guard case .q1(let a) = first else { Issue.record("Q1 answered \(first)"); return }
            // A byte-identical replay is refused (the realm remembers the request's encapsulation);
            // only the client's own retry, sealed afresh, gets the stored answer.
            #expect(replayed == .error(RealmErrorAnswer(code: .badTicket, currentVersion: reg.version)))
            #expect(a.attemptsLeft == 9)
            // A fresh sealing of the identical request (a client retry): the same stored answer.
            #expect(try await realm.send(.q1(q1)) == first)
            #expect(try await realm.attemptsLeft("erin") == 9)

            // Same ticket, another blinded element: refused, no increment.
            let other = Q1Request(token: token, ticket: q.ticket, version: reg.version, blindedElement: try VaultOPRF.blind(rnd(16)).blindedElementBytes)
            let refused = try await realm.send(.q1(other))
            #expect(refused == .error(RealmErrorAnswer(code: .badTicket, currentVersion: reg.version)))
            // A made-up ticket, and another user's ticket: refused.
            #expect(try await realm.send(.q1(Q1Request(token: token, ticket: .random(), version: reg.version, blindedElement: blinded)))
                    == .error(RealmErrorAnswer(code: .badTicket, currentVersion: reg.version)))
            _ = try await realm.register("frank")
            let franks = try await realm.q0("frank")
            #expect(try await realm.send(.q1(Q1Request(token: token, ticket: franks.ticket, version: reg.version, blindedElement: blinded)))
                    == .error(RealmErrorAnswer(code: .badTicket, currentVersion: reg.version)))
            // A delete-scope ticket is not a guess ticket.
            let delTicket = try await realm.q0("erin", scope: .delete)
            #expect(try await realm.send(.q1(Q1Request(token: token, ticket: delTicket.ticket, version: reg.version, blindedElement: blinded)))
                    == .error(RealmErrorAnswer(code: .badTicket, currentVersion: reg.version)))
            #expect(try await realm.attemptsLeft("erin") == 9)
        }
    }

    @Test("a resent unlock proof gets its stored answer and changes nothing; another proof on a spent challenge is refused")
    func unlockReplay() async throws {
        let t = try await RealmTestCluster.start()
        try await stopping(t) {
            let realm = t.realm()
            let reg = try await realm.register("gina")
            guard case .q1(let a) = try await realm.guess("gina", version: reg.version) else { Issue.record("no Q1"); return }
            let q2 = Q2Request(token: try await realm.token("gina", .recover), version: reg.version, challenge: a.challenge,
                               unlockProof: realm.proof(tag: reg.tag, version: reg.version, challenge: a.challenge))
            let (bytes, opener) = try realm.probe.seal(.q2(q2))
            #expect(try await realm.sendSealed(bytes, opener: opener, type: .q2) == .q2(Q2Answer(wrappedKey: reg.wrapped)))

            // A new guess is in flight; the resent proof must neither unlock again nor spend that challenge.
            // (Issue 11, problem 4: a byte-identical Q2 within the challenge's lifetime is a retry of an
            // answer that was lost, so it gets the stored outcome, where it used to be refused.)
            guard case .q1(let b) = try await realm.guess("gina", version: reg.version) else { Issue.record("no Q1"); return }
            #expect(b.attemptsLeft == 9)
            #expect(try await realm.send(.q2(q2)) == .q2(Q2Answer(wrappedKey: reg.wrapped)))
            #expect(try await realm.attemptsLeft("gina") == 9)
            // The live challenge still works.
            let ok = try await realm.unlock("gina", version: reg.version, challenge: b.challenge,
                                            proof: realm.proof(tag: reg.tag, version: reg.version, challenge: b.challenge))
            #expect(ok == .q2(Q2Answer(wrappedKey: reg.wrapped)))
            // A wrong proof spends its challenge: a second try with the right proof is refused.
            guard case .q1(let c) = try await realm.guess("gina", version: reg.version) else { Issue.record("no Q1"); return }
            _ = try await realm.unlock("gina", version: reg.version, challenge: c.challenge, proof: rnd(32))
            #expect(try await realm.unlock("gina", version: reg.version, challenge: c.challenge,
                                           proof: realm.proof(tag: reg.tag, version: reg.version, challenge: c.challenge))
                    == .error(RealmErrorAnswer(code: .badChallenge, currentVersion: reg.version)))
        }
    }

    @Test("a replayed registration is refused and changes nothing")
    func registrationReplay() async throws {
        let t = try await RealmTestCluster.start()
        try await stopping(t) {
            let realm = t.realm()
            let first = try await realm.register("hank")
            let second = try await realm.register("hank", expected: first.version, replacing: first)
            // Replaying the first R2 (its pending id is spent): refused; the record keeps the second version.
            #expect(try await realm.send(.r2(first.r2)) == .error(RealmErrorAnswer(code: .badPending, currentVersion: second.version)))
            #expect(try await realm.send(.r2(second.r2)) == .error(RealmErrorAnswer(code: .badPending, currentVersion: second.version)))
            let q = try await realm.q0("hank")
            #expect(q.state == .active && q.version == second.version)

            // A stale expectedVersion (compare-and-swap): refused, the pending stays unspent for a corrected retry.
            let token = try await realm.token("hank", .register)
            guard case .r1(let r1) = try await realm.send(.r1(R1Request(token: token, blindedElement: try VaultOPRF.blind(rnd(8)).blindedElementBytes))) else {
                Issue.record("no R1"); return
            }
            var r2 = second.r2
            r2.pendingID = r1.pendingID
            r2.expectedVersion = first.version
            r2.version = .random()
            #expect(try await realm.send(.r2(r2)) == .error(RealmErrorAnswer(code: .versionMismatch, currentVersion: second.version)))
            r2.expectedVersion = second.version
            // (Replacing the active record needs the proof keyed by its unlock tag: RealmReplaceTests.)
            r2.replaceProof = VaultDerivation.replaceProof(tag: second.tag, realmID: realm.realmID, currentVersion: second.version,
                                                           newVersion: r2.version, pendingID: r1.pendingID)
            #expect(try await realm.send(.r2(r2)) == .r2(R2Answer(version: r2.version)))
            // A guess limit above the realm's maximum is refused.
            guard case .r1(let r1b) = try await realm.send(.r1(R1Request(token: token, blindedElement: try VaultOPRF.blind(rnd(8)).blindedElementBytes))) else {
                Issue.record("no R1"); return
            }
            var r2b = r2
            r2b.pendingID = r1b.pendingID
            r2b.expectedVersion = r2.version
            r2b.version = .random()
            r2b.policy = try VaultPolicy(log2N: 15, guessLimit: 11)
            #expect(try await realm.send(.r2(r2b)) == .error(RealmErrorAnswer(code: .policyRefused)))
        }
    }

    @Test("a replayed delete is refused and deletes nothing")
    func deleteReplay() async throws {
        let t = try await RealmTestCluster.start()
        try await stopping(t) {
            let realm = t.realm()
            let first = try await realm.register("ivy")
            let q = try await realm.q0("ivy", scope: .delete)
            let del = DeleteRequest(token: try await realm.token("ivy", .delete), ticket: q.ticket, expectedVersion: first.version)
            let (bytes, opener) = try realm.probe.seal(.delete(del))
            #expect(try await realm.sendSealed(bytes, opener: opener, type: .delete) == .delete(DeleteAnswer(deletedVersion: first.version)))
            #expect(try await realm.q0("ivy").state == .none)
            #expect(try realm.storedRow("ivy") == nil)

            // Registered again (same version cannot recur, but even so): the replay must not delete it.
            let again = try await realm.register("ivy")
            #expect(try await realm.sendSealed(bytes, opener: opener, type: .delete) == .error(RealmErrorAnswer(code: .badTicket, currentVersion: again.version)))
            #expect(try await realm.q0("ivy").state == .active)
            // A recover ticket cannot delete; a wrong expectedVersion cannot either.
            let rq = try await realm.q0("ivy", scope: .recover)
            #expect(try await realm.send(.delete(DeleteRequest(token: try await realm.token("ivy", .delete), ticket: rq.ticket, expectedVersion: again.version)))
                    == .error(RealmErrorAnswer(code: .badTicket, currentVersion: again.version)))
            let dq = try await realm.q0("ivy", scope: .delete)
            #expect(try await realm.send(.delete(DeleteRequest(token: try await realm.token("ivy", .delete), ticket: dq.ticket, expectedVersion: first.version)))
                    == .error(RealmErrorAnswer(code: .versionMismatch, currentVersion: again.version)))
            #expect(try await realm.q0("ivy").state == .active)
        }
    }
}
