import Crypto
import Foundation
import Testing
@testable import CofferVault

/// The state machines driven directly with crafted replies (no I/O): the decisions that do not
/// need a realm's cryptography.
@Suite struct RecoveryMachineQ0Tests {
    static let realmKey = try! XWingMLKEM768X25519.PrivateKey.generate()
    static let config: ValidatedVaultConfiguration = {
        let key = RealmKeyDescriptor(RealmPublicKey(id: 1, publicKey: realmKey.publicKey))
        let realms = (1...5).map { i in
            VaultRealm(id: RealmID.random().hex, url: "http://127.0.0.1:\(7000 + i)", keys: [key], x: UInt8(i))
        }
        return try! VaultConfiguration(tenant: "t", threshold: 3, realms: realms).validated()
    }()
    var ids: [RealmID] { Self.config.realms.map(\.id) }

    func machine() -> RecoveryMachine {
        RecoveryMachine(configuration: Self.config, user: "u", tokens: Dictionary(uniqueKeysWithValues: ids.map { ($0, "tok") }))
    }

    static func active(_ version: RecordVersion, c: [UInt8] = [UInt8](repeating: 1, count: 32), left: UInt8 = 10) -> RealmReply {
        .success(.q0(Q0Answer(state: .active, version: version, policy: .default, commitment: c,
                              verificationKey: [UInt8](repeating: 2, count: 32), attemptsLeft: left, ticket: .random())))
    }

    @Test func aGroupOfThreeIdenticalRecordsIsSelectedAndOthersAreStale() throws {
        let v = RecordVersion.random(), other = RecordVersion.random()
        var m = machine()
        _ = m.q0Requests()
        try m.receiveQ0([ids[0]: Self.active(v, left: 7), ids[1]: Self.active(v), ids[2]: Self.active(v),
                         ids[3]: Self.active(other), ids[4]: .failure(.timeout)])
        #expect(m.version == v)
        #expect(m.attemptsLeftBeforeGuess == 7)
        #expect(m.stale == [ids[3]])
        let q1 = try m.q1Requests(password: "x")
        #expect(Set(q1.keys) == Set(ids[0...2]))
    }

    @Test func sameVersionButDifferentCommitmentIsNotAGroup() {
        let v = RecordVersion.random()
        var m = machine()
        _ = m.q0Requests()
        #expect(throws: VaultError.self) {
            try m.receiveQ0([ids[0]: Self.active(v), ids[1]: Self.active(v), ids[2]: Self.active(v, c: [UInt8](repeating: 9, count: 32)),
                             ids[3]: Self.active(v, c: [UInt8](repeating: 8, count: 32)), ids[4]: .failure(.timeout)])
        }
    }

    @Test func disagreeingRealmsAreARealmFaultNamingTheMinority() {
        let v = RecordVersion.random()
        var m = machine()
        _ = m.q0Requests()
        do {
            try m.receiveQ0([ids[0]: Self.active(v), ids[1]: Self.active(v), ids[2]: Self.active(.random()),
                             ids[3]: Self.active(.random()), ids[4]: .failure(.timeout)])
            Issue.record("no error")
        } catch {
            guard error.code == .realmFault else { Issue.record("\(error)"); return }
            let faulty = error.realms, down = error.unreachable
            #expect(Set(faulty.map(\.realmID)) == [ids[2], ids[3]])
            #expect(down.map(\.realmID) == [ids[4]])
        }
    }

    @Test func lockedNotRegisteredAndUnavailableAreTold() {
        let ticket = Ticket.random()
        let locked: RealmReply = .success(.q0(.locked(version: .random(), ticket: ticket)))
        let none: RealmReply = .success(.q0(.notRegistered(ticket: ticket)))
        var m = machine()
        #expect(throws: VaultError.locked) {
            try m.receiveQ0([ids[0]: locked, ids[1]: locked, ids[2]: locked, ids[3]: Self.active(.random()), ids[4]: .failure(.timeout)])
        }
        m = machine()
        #expect(throws: VaultError.notRegistered) {
            try m.receiveQ0([ids[0]: none, ids[1]: none, ids[2]: none, ids[3]: .failure(.unsealed), ids[4]: .failure(.timeout)])
        }
        m = machine()
        do {
            try m.receiveQ0([ids[0]: Self.active(RecordVersion(uncheckedBytes: [UInt8](repeating: 3, count: 16))),
                             ids[1]: Self.active(RecordVersion(uncheckedBytes: [UInt8](repeating: 3, count: 16))),
                             ids[2]: .failure(.unsealed), ids[3]: .failure(.httpStatus(502)), ids[4]: .failure(.timeout)])
            Issue.record("no error")
        } catch {
            guard error.code == .realmsUnavailable else { Issue.record("\(error)"); return }
            let down = error.unreachable, needed = error.needed
            #expect(needed == 1 && down.count == 3)
        }
        // Forged "locked" answers cannot arrive as answers at all: the transport turns them into
        // failures, and failures never count as locked.
        m = machine()
        do {
            try m.receiveQ0([ids[0]: .failure(.unsealed), ids[1]: .failure(.unsealed), ids[2]: .failure(.unsealed),
                             ids[3]: .failure(.unsealed), ids[4]: .failure(.unsealed)])
            Issue.record("no error")
        } catch {
            guard error.code == .realmsUnavailable else { Issue.record("forgeries read as \(error)"); return }
            let needed = error.needed
            #expect(needed == 3)
        }
    }

    @Test func wrongPasswordNeedsTValidAnswersAndReportsTheMinimum() throws {
        // A full run of the machine against in-memory realms that use the real primitives.
        let v = RecordVersion.random()
        let key = SymmetricKey(size: .bits256)
        var reg = RegistrationMachine(configuration: Self.config, user: "u", key: key, policy: try VaultPolicy(log2N: 15),
                                      tokens: Dictionary(uniqueKeysWithValues: ids.map { ($0, "tok") }), version: v)
        let oprfKeys = Dictionary(uniqueKeysWithValues: ids.map { ($0, VaultOPRF.generateKey()) })
        _ = reg.q0Requests()
        let r1 = try reg.receiveQ0(Dictionary(uniqueKeysWithValues: ids.map { ($0, .success(.q0(.notRegistered(ticket: .random())))) }), password: "pw")
        var r1Replies = [RealmID: RealmReply]()
        for (id, req) in r1 {
            guard case .r1(let m) = req else { continue }
            let (e, p) = try VaultOPRF.evaluate(blindedElement: m.blindedElement, key: oprfKeys[id]!)
            r1Replies[id] = .success(.r1(R1Answer(pendingID: .random(), evaluatedElement: e, proof: p, oprfPublicKey: VaultOPRF.publicKeyBytes(oprfKeys[id]!))))
        }
        let r2 = try reg.receiveR1(r1Replies)
        var records = [RealmID: R2Request]()
        for (id, req) in r2 { if case .r2(let m) = req { records[id] = m } }
        let report = try reg.receiveR2(Dictionary(uniqueKeysWithValues: records.keys.map { ($0, .success(.r2(R2Answer(version: v)))) }))
        #expect(report.acknowledged.count == 5)

        // Drive it properly: blind once, answer every realm from that one blinding.
        func run(_ password: String, left: [UInt8]) throws -> (RecoveryMachine.Q1Outcome, RecoveryMachine) {
            var m = machine()
            _ = m.q0Requests()
            var q0 = [RealmID: RealmReply]()
            for (id, r) in records {
                q0[id] = .success(.q0(Q0Answer(state: .active, version: r.version, policy: r.policy, commitment: r.commitment,
                                               verificationKey: r.verificationKey, attemptsLeft: 10, ticket: .random())))
            }
            try m.receiveQ0(q0)
            let q1 = try m.q1Requests(password: password)
            var replies = [RealmID: RealmReply]()
            for (i, id) in ids.enumerated() {
                guard case .q1(let q) = q1[id] else { continue }
                let (e, p) = try VaultOPRF.evaluate(blindedElement: q.blindedElement, key: oprfKeys[id]!)
                replies[id] = .success(.q1(Q1Answer(evaluatedElement: e, proof: p, oprfPublicKey: VaultOPRF.publicKeyBytes(oprfKeys[id]!),
                                                    maskedShare: records[id]!.maskedShare, signature: records[id]!.signature,
                                                    challenge: .random(), attemptsLeft: left[i])))
            }
            return (m.receiveQ1(replies), m)
        }
        let (bad, badMachine) = try run("wrong", left: [9, 8, 9, 9, 7])
        #expect(bad == .wrongPassword(attemptsLeft: 7))
        // Q2 still goes to every realm that answered, with random proofs.
        let q2 = badMachine.q2Requests()
        #expect(q2.count == 5)
        let (good, goodMachine) = try run("pw", left: [9, 9, 9, 9, 9])
        #expect(good == .recovered)
        // Real proofs verify at a realm that kept tag_i.
        for (id, req) in goodMachine.q2Requests() {
            guard case .q2(let q) = req else { continue }
            #expect(VaultDerivation.verifyUnlockProof(q.unlockProof, tag: records[id]!.unlockTag, realmID: id, version: v, challenge: q.challenge))
        }
        for (id, req) in badMachine.q2Requests() {
            guard case .q2(let q) = req else { continue }
            #expect(!VaultDerivation.verifyUnlockProof(q.unlockProof, tag: records[id]!.unlockTag, realmID: id, version: v, challenge: q.challenge))
        }
        // W opens to K with the recovered S.
        var gm = goodMachine
        let k = try gm.receiveQ2(Dictionary(uniqueKeysWithValues: ids.map { ($0, .success(.q2(Q2Answer(wrappedKey: records[$0]!.wrappedKey)))) }))
        #expect(k == key)
    }
}

@Suite struct CombinationsTests {
    @Test func subsetsAreAllThere() {
        #expect(combinations([1, 2, 3, 4, 5], 3).count == 10)
        #expect(Set(combinations([1, 2, 3, 4, 5], 3).map { Set($0) }).count == 10)
        #expect(combinations([1, 2], 3).isEmpty)
    }
}
