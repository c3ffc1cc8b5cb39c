import CofferRealm
import CofferVault
import Foundation
import Testing

/// Issue 11, problem 8: a `register` token used to overwrite an active registration silently. Now
/// R2 over an active record needs a replace proof keyed by the record's stored unlock tag (only a
/// client that recovered with the current password, or made the registration, has it), or a
/// `reset`-scoped token, which the realm counts in the record and in `/metrics`.
@Suite("Realm replace rule", .serialized)
struct RealmReplaceTests {
    /// R1 then R2 (scope `scope`) replacing `expected` with random fields; `proof` makes the replace
    /// proof from the R1 answer's pending id (nil: all zero).
    static func replace(_ realm: RealmClient, _ user: String, expected: RecordVersion, scope: VaultScope = .register,
                        proof: ((PendingID, RecordVersion) -> [UInt8])? = nil) async throws -> (answer: VaultAnswer, r2: R2Request) {
        let token = try await realm.token(user, scope)
        let a1 = try await realm.send(.r1(R1Request(token: token, blindedElement: try VaultOPRF.blind(rnd(16)).blindedElementBytes)))
        guard case .r1(let r1) = a1 else { throw TestFailure("R1 answered \(a1)") }
        let version = RecordVersion.random()
        let r2 = R2Request(token: token, pendingID: r1.pendingID, expectedVersion: expected, version: version,
                           maskedShare: rnd(32), commitment: rnd(32), verificationKey: rnd(32), signature: rnd(64),
                           unlockTag: rnd(32), wrappedKey: rnd(60), policy: try VaultPolicy(log2N: 15, guessLimit: 10),
                           replaceProof: proof?(r1.pendingID, version) ?? [UInt8](repeating: 0, count: 32))
        return (try await realm.send(.r2(r2)), r2)
    }

    static func metric(_ realm: RealmClient, _ name: String) async throws -> Double? {
        let (_, text) = try await realm.getAdmin("/metrics")
        return text.split(separator: "\n").first { $0.hasPrefix(name + " ") }.flatMap { Double($0.split(separator: " ").last!) }
    }

    @Test("a register token cannot replace an active registration without proof (0x13, sealed, padded); nothing changes")
    func refusedWithoutProof() async throws {
        let t = try await RealmTestCluster.start()
        try await stopping(t) {
            let realm = t.realm()
            let reg = try await realm.register("ann")
            let (answer, _) = try await Self.replace(realm, "ann", expected: reg.version)
            #expect(answer == .error(RealmErrorAnswer(code: .replaceNotProven, currentVersion: reg.version)))
            #expect(RealmErrorCode.replaceNotProven.rawValue == 0x13)
            // The record is the one registered: same version, same unlock tag (the old proof still unlocks).
            #expect(try await realm.q0("ann").version == reg.version)
            guard case .q1(let q1) = try await realm.guess("ann", version: reg.version) else { Issue.record("no Q1"); return }
            #expect(try await realm.unlock("ann", version: reg.version, challenge: q1.challenge,
                                           proof: realm.proof(tag: reg.tag, version: reg.version, challenge: q1.challenge))
                    == .q2(Q2Answer(wrappedKey: reg.wrapped)))
            #expect(try await Self.metric(realm, "coffer_realm_replace_refusals_total") == 1)
            // Over no record (a first registration) no proof is needed.
            _ = try await realm.register("bob")
        }
    }

    @Test("wrong replace proofs are refused: random bytes, another tag, another pending id, another new version")
    func wrongProofs() async throws {
        let t = try await RealmTestCluster.start()
        try await stopping(t) {
            let realm = t.realm()
            let reg = try await realm.register("cat")
            let id = realm.realmID
            let refused = VaultAnswer.error(RealmErrorAnswer(code: .replaceNotProven, currentVersion: reg.version))
            #expect(try await Self.replace(realm, "cat", expected: reg.version) { _, _ in rnd(32) }.answer == refused)
            #expect(try await Self.replace(realm, "cat", expected: reg.version) { pid, v in
                VaultDerivation.replaceProof(tag: rnd(32), realmID: id, currentVersion: reg.version, newVersion: v, pendingID: pid)
            }.answer == refused)
            #expect(try await Self.replace(realm, "cat", expected: reg.version) { _, v in
                VaultDerivation.replaceProof(tag: reg.tag, realmID: id, currentVersion: reg.version, newVersion: v, pendingID: .random())
            }.answer == refused)
            #expect(try await Self.replace(realm, "cat", expected: reg.version) { pid, _ in
                VaultDerivation.replaceProof(tag: reg.tag, realmID: id, currentVersion: reg.version, newVersion: .random(), pendingID: pid)
            }.answer == refused)
            #expect(try await realm.q0("cat").version == reg.version)
            #expect(try await Self.metric(realm, "coffer_realm_replace_refusals_total") == 4)
        }
    }

    @Test("with a proof keyed by the current unlock tag the replacement is accepted, not counted as a reset; guesses carry over")
    func acceptedWithProof() async throws {
        let t = try await RealmTestCluster.start()
        try await stopping(t) {
            let realm = t.realm()
            let reg = try await realm.register("dan")
            _ = try await realm.wrongRound("dan", version: reg.version)
            let id = realm.realmID
            let (answer, r2) = try await Self.replace(realm, "dan", expected: reg.version) { pid, v in
                VaultDerivation.replaceProof(tag: reg.tag, realmID: id, currentVersion: reg.version, newVersion: v, pendingID: pid)
            }
            #expect(answer == .r2(R2Answer(version: r2.version)))
            let q = try await realm.q0("dan", scope: .status)
            #expect(q.version == r2.version && q.attemptsLeft == 9)
            let store = try #require(t.cluster.realms[0].service?.store)
            #expect(try await store.resetCount(tenant: t.tenant.tenant, user: "dan") == 0)
            #expect(try await Self.metric(realm, "coffer_realm_resets_total") ?? 0 == 0)
        }
    }

    @Test("a reset-scoped token replaces without proof, and the realm counts it in the record and in /metrics")
    func resetCounted() async throws {
        let t = try await RealmTestCluster.start()
        try await stopping(t) {
            let realm = t.realm()
            let reg = try await realm.register("eve")
            let (first, r2a) = try await Self.replace(realm, "eve", expected: reg.version, scope: .reset)
            #expect(first == .r2(R2Answer(version: r2a.version)))
            let (second, r2b) = try await Self.replace(realm, "eve", expected: r2a.version, scope: .reset)
            #expect(second == .r2(R2Answer(version: r2b.version)))
            #expect(try await realm.q0("eve").version == r2b.version)
            let store = try #require(t.cluster.realms[0].service?.store)
            #expect(try await store.resetCount(tenant: t.tenant.tenant, user: "eve") == 2)
            #expect(try await Self.metric(realm, "coffer_realm_resets_total") == 2)
            // A reset over no record replaces nothing: not counted.
            let (fresh, _) = try await Self.replace(realm, "fay", expected: .zero, scope: .reset)
            guard case .r2 = fresh else { Issue.record("reset over none answered \(fresh)"); return }
            #expect(try await store.resetCount(tenant: t.tenant.tenant, user: "fay") == 0)
            #expect(try await Self.metric(realm, "coffer_realm_resets_total") == 2)
            // The count survives a later proven replacement (it is per user, carried by the record).
            let (proven, _) = try await Self.replace(realm, "eve", expected: r2b.version) { pid, v in
                VaultDerivation.replaceProof(tag: r2b.unlockTag, realmID: realm.realmID, currentVersion: r2b.version, newVersion: v, pendingID: pid)
            }
            guard case .r2 = proven else { Issue.record("proven replace answered \(proven)"); return }
            #expect(try await store.resetCount(tenant: t.tenant.tenant, user: "eve") == 2)
            // A status token cannot reset (scope).
            let status = try await realm.token("eve", .status)
            #expect(try await realm.send(.r1(R1Request(token: status, blindedElement: try VaultOPRF.blind(rnd(16)).blindedElementBytes)))
                    == .error(RealmErrorAnswer(code: .scopeNotAllowed)))
        }
    }

    @Test("a proof for a stale expectedVersion is refused (versionMismatch), and a replayed proven R2 changes nothing")
    func staleAndReplayed() async throws {
        let t = try await RealmTestCluster.start()
        try await stopping(t) {
            let realm = t.realm()
            let reg = try await realm.register("gus")
            let id = realm.realmID
            // Replace once, with proof; keep the sealed bytes of that R2.
            let token = try await realm.token("gus", .register)
            guard case .r1(let r1) = try await realm.send(.r1(R1Request(token: token, blindedElement: try VaultOPRF.blind(rnd(16)).blindedElementBytes)))
            else { Issue.record("no R1"); return }
            let v2 = RecordVersion.random()
            let r2 = R2Request(token: token, pendingID: r1.pendingID, expectedVersion: reg.version, version: v2,
                               maskedShare: rnd(32), commitment: rnd(32), verificationKey: rnd(32), signature: rnd(64),
                               unlockTag: rnd(32), wrappedKey: rnd(60), policy: try VaultPolicy(log2N: 15, guessLimit: 10),
                               replaceProof: VaultDerivation.replaceProof(tag: reg.tag, realmID: id, currentVersion: reg.version,
                                                                          newVersion: v2, pendingID: r1.pendingID))
            let (bytes, opener) = try realm.probe.seal(.r2(r2))
            #expect(try await realm.sendSealed(bytes, opener: opener, type: .r2) == .r2(R2Answer(version: v2)))
            // The same bytes again: refused, nothing changes.
            guard case .error(let e) = try await realm.sendSealed(bytes, opener: opener, type: .r2) else { Issue.record("replay accepted"); return }
            #expect(e.code == .badPending)
            #expect(try await realm.q0("gus").version == v2)
            // Whoever still holds the old tag (the old password) cannot replace the newer registration:
            // the stale expectedVersion is refused, and a proof from the old tag for the current version too.
            let stale = try await Self.replace(realm, "gus", expected: reg.version) { pid, v in
                VaultDerivation.replaceProof(tag: reg.tag, realmID: id, currentVersion: reg.version, newVersion: v, pendingID: pid)
            }
            #expect(stale.answer == .error(RealmErrorAnswer(code: .versionMismatch, currentVersion: v2)))
            let oldTag = try await Self.replace(realm, "gus", expected: v2) { pid, v in
                VaultDerivation.replaceProof(tag: reg.tag, realmID: id, currentVersion: v2, newVersion: v, pendingID: pid)
            }
            #expect(oldTag.answer == .error(RealmErrorAnswer(code: .replaceNotProven, currentVersion: v2)))
            #expect(try await realm.q0("gus").version == v2)
        }
    }
}
