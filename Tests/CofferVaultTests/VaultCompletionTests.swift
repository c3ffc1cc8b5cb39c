import CofferCore
import CofferRealm
import Crypto
import Foundation
import Testing
@testable import CofferVault

/// A token holder's attack on one realm: Q0 for a ticket, Q1 with a fresh random blinded input on
/// `version`, then Q2 with a random proof (as a real client does), until the realm refuses.
/// Returns how many guesses the realm counted.
func spendGuesses(_ h: FlowHarness, realm index: Int, user: String, version: RecordVersion) async throws -> Int {
    let transport = HTTPRealmTransport(timeout: .seconds(30))
    let realm = h.config.realms[index]
    var counted = 0
    while counted <= Int(VaultPolicy.guessLimitRange.upperBound) {
        let token = try await h.tenant.token(user: user, realmID: realm.id, scope: .recover)
        guard case .success(.q0(let a)) = await transport.call(.q0(Q0Request(token: token)), realm: realm), a.state == .active else { break }
        let input = SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) }
        let blinded = try VaultOPRF.blind(input)
        let q1 = await transport.call(.q1(Q1Request(token: token, ticket: a.ticket, version: version, blindedElement: blinded.blindedElementBytes)),
                                      realm: realm)
        guard case .success(.q1(let answer)) = q1 else { break }
        counted += 1
        _ = await transport.call(.q2(Q2Request(token: token, version: version, challenge: answer.challenge, unlockProof: Challenge.random().bytes)),
                                 realm: realm)
    }
    return counted
}

/// Password tests an attacker who controls the other realms gets from the honest realms' budgets:
/// each test needs `needed` (= t - c) evaluations at distinct honest realms. Greedy (always the
/// realms with the most budget left) is optimal.
func passwordTests(_ budgets: [Int], needed: Int) -> Int {
    var b = budgets
    var tests = 0
    while true {
        b.sort(by: >)
        guard b.count >= needed, needed > 0, b[needed - 1] > 0 else { return tests }
        for i in 0..<needed { b[i] -= 1 }
        tests += 1
    }
}

@Suite("Vault: guess accounting over every path (issue 11, problem 2)", .serialized)
struct VaultGuessBoundTests {
    @Test("rotation reaching 3 realms, the stale realms' guesses spent, then the repair: within 20 (c = 1) and 30 (c = 2)")
    func partialRotationThenRepairStaysWithinTheBound() async throws {
        let h = try await FlowHarness.start()
        try await stopping(h) {
            var client = h.client(transport: HTTPRealmTransport(timeout: .seconds(30)))
            client.repairStore = VaultRepairStore(home: h.root.appendingPathComponent("device"))
            let key = BackupKey()
            let v1 = try await client.register(key: key, password: "pw", user: "ivy").version
            // The recovery's rotation reaches realms 0, 1, 2 only.
            await h.cluster.realms[3].stop()
            await h.cluster.realms[4].stop()
            let recovered = try await client.recover(password: "pw", user: "ivy")
            let rotation = try #require(recovered.rotation)
            #expect(!rotation.complete && rotation.pending.map(\.realmID) == [h.config.realms[3].id, h.config.realms[4].id])
            let v2 = rotation.version
            try await restart(h.cluster.realms[3])
            try await restart(h.cluster.realms[4])
            // The attacker (a token holder, with realm 2's copy of v1 to complete a group) spends the
            // stale realms' whole budget on v1: they end locked.
            let v1Spent = [try await spendGuesses(h, realm: 3, user: "ivy", version: v1), try await spendGuesses(h, realm: 4, user: "ivy", version: v1)]
            #expect(v1Spent == [10, 10])
            // The device's pending change must not revive those tombstones with a fresh budget.
            #expect(try await client.repair(user: "ivy") == .completed(repaired: 0))
            #expect(client.pendingChange(user: "ivy") == nil)
            let status = await client.status(user: "ivy")
            for i in [3, 4] {
                #expect(status.realms[i].state == .locked(version: v1), "realm \(i): \(status.realms[i].state)")
            }
            // Then every honest realm's budget on v2.
            var v2Spent = [Int]()
            for i in 0..<5 { v2Spent.append(try await spendGuesses(h, realm: i, user: "ivy", version: v2)) }
            #expect(v2Spent == [10, 10, 10, 0, 0])
            // c = 1 (realm 2 malicious): v1 tests need realms 3 and 4; v2 tests two of 0, 1, 3, 4.
            let c1 = passwordTests(v1Spent, needed: 2) + passwordTests([v2Spent[0], v2Spent[1], v2Spent[3], v2Spent[4]], needed: 2)
            #expect(c1 <= 20, "c = 1: \(c1) password tests, documented bound 20")
            // c = 2 (realms 1 and 2 malicious): every honest evaluation is a test.
            let c2 = passwordTests(v1Spent, needed: 1) + passwordTests([v2Spent[0], v2Spent[3], v2Spent[4]], needed: 1)
            #expect(c2 <= 30, "c = 2: \(c2) password tests, documented bound 30")
        }
    }

    @Test("a change that reaches a realm late keeps the guesses that realm counted on the old record")
    func lateChangeInheritsCountedGuesses() async throws {
        let h = try await FlowHarness.start()
        try await stopping(h) {
            var client = h.client(transport: HTTPRealmTransport(timeout: .seconds(30)))
            client.repairStore = VaultRepairStore(home: h.root.appendingPathComponent("device"))
            let key = BackupKey()
            let v1 = try await client.register(key: key, password: "pw", user: "jon").version
            await h.cluster.realms[4].stop()
            let change = try await client.changePassword(currentPassword: "pw", newPassword: "pw two", user: "jon")
            #expect(!change.complete)
            try await restart(h.cluster.realms[4])
            // Spend 5 of realm 4's guesses on the old record before the change reaches it.
            for _ in 0..<5 {
                let token = try await h.tenant.token(user: "jon", realmID: h.config.realms[4].id, scope: .recover)
                let transport = HTTPRealmTransport(timeout: .seconds(30))
                guard case .success(.q0(let a)) = await transport.call(.q0(Q0Request(token: token)), realm: h.config.realms[4]) else {
                    Issue.record("no Q0 answer"); return
                }
                let blinded = try VaultOPRF.blind(SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) })
                let r = await transport.call(.q1(Q1Request(token: token, ticket: a.ticket, version: v1, blindedElement: blinded.blindedElementBytes)),
                                             realm: h.config.realms[4])
                guard case .success(.q1(let answer)) = r else { Issue.record("guess refused: \(r)"); return }
                _ = await transport.call(.q2(Q2Request(token: token, version: v1, challenge: answer.challenge, unlockProof: Challenge.random().bytes)),
                                         realm: h.config.realms[4])
            }
            #expect(try await client.repair(user: "jon") == .completed(repaired: 1))
            let status = await client.status(user: "jon")
            #expect(status.realms[4].state == .active(version: change.version, attemptsLeft: 5))
            #expect(status.realms[0].state == .active(version: change.version, attemptsLeft: 10))
            // The new password works; the old one is refused everywhere.
            #expect(try await client.recover(password: "pw two", user: "jon", rotate: false).key.constantTimeEquals(key))
        }
    }
}

@Suite("Vault: lockout believed only with a quorum (issue 11, problem 3)", .serialized)
struct VaultLockoutQuorumTests {
    @Test("one lying realm saying 'no guesses left' or 'locked' does not make the client report a lockout")
    func oneLyingRealmCannotReportALockout() async throws {
        let h = try await FlowHarness.start()
        try await stopping(h) {
            let key = BackupKey()
            try await h.client(transport: HTTPRealmTransport(timeout: .seconds(30))).register(key: key, password: "right", user: "kai")
            let liar = h.config.realms[2].id
            let zeroLeft = TamperingTransport(inner: HTTPRealmTransport(timeout: .seconds(30)), targets: [liar]) { answer in
                switch answer {
                case .q0(var a): a.attemptsLeft = 0; return .q0(a)
                case .q1(var a): a.attemptsLeft = 0; return .q1(a)
                default: return answer
                }
            }
            do {
                _ = try await h.client(transport: zeroLeft).recover(password: "wrong", user: "kai")
                Issue.record("a wrong password recovered")
            } catch let error as VaultError {
                guard error.code == .lockNotConfirmed else { Issue.record("got \(error)"); return }
                let left = error.attemptsLeft, claiming = error.realms
                #expect(left == 9)
                #expect(claiming.map(\.realmID) == [liar])
                #expect(error.description.contains(liar.hex))
            }
            let saysLocked = TamperingTransport(inner: HTTPRealmTransport(timeout: .seconds(30)), targets: [liar]) { answer in
                guard case .q1 = answer else { return answer }
                return .error(RealmErrorAnswer(code: .locked))
            }
            do {
                _ = try await h.client(transport: saysLocked).recover(password: "wrong", user: "kai")
                Issue.record("a wrong password recovered")
            } catch let error as VaultError {
                guard error.code == .lockNotConfirmed else { Issue.record("got \(error)"); return }
                let left = error.attemptsLeft, claiming = error.realms
                #expect(left == 8 && claiming.map(\.realmID) == [liar])
            }
            // Status is not fooled either, and the right password still works.
            #expect(await h.client(transport: zeroLeft).status(user: "kai").attemptsLeft == 8)
            #expect(try await h.client(transport: zeroLeft).recover(password: "right", user: "kai", rotate: false).key.constantTimeEquals(key))
        }
    }

    @Test("0 (locked) only with n - t + 1 zeros; otherwise the smallest non-zero value")
    func quorumValue() {
        #expect(RecoveryMachine.quorumAttemptsLeft([0, 9, 9, 9, 9], n: 5, t: 3) == 9)
        #expect(RecoveryMachine.quorumAttemptsLeft([0, 0, 9, 9, 9], n: 5, t: 3) == 9)
        #expect(RecoveryMachine.quorumAttemptsLeft([0, 0, 0, 9, 9], n: 5, t: 3) == 0)
        #expect(RecoveryMachine.quorumAttemptsLeft([0, 0, 0], n: 5, t: 3) == 0)
        #expect(RecoveryMachine.quorumAttemptsLeft([9, 7, 9, 100, 100], n: 5, t: 3) == 7)
        #expect(RecoveryMachine.quorumAttemptsLeft([0, 9, 9], n: 5, t: 3) == 9)
    }
}

@Suite("Vault: disable complete only at every realm (issue 11, problem 1)", .serialized)
struct VaultPendingDisableTests {
    @Test("a disable that missed a realm stays pending (0600) and is finished by the next retry; a later registration supersedes it")
    func pendingDisable() async throws {
        let h = try await FlowHarness.start()
        try await stopping(h) {
            var client = h.client(transport: HTTPRealmTransport(timeout: .seconds(30)))
            client.repairStore = VaultRepairStore(home: h.root.appendingPathComponent("device"))
            let key = BackupKey()
            try await client.register(key: key, password: "pw", user: "lea")
            await h.cluster.realms[1].stop()
            let report = try await client.disable(user: "lea")
            #expect(!report.complete && report.remaining.map(\.realmID) == [h.config.realms[1].id])
            guard case .disable(let pending)? = client.pendingChange(user: "lea") else { Issue.record("no pending disable"); return }
            #expect(pending.pendingRealms == [h.config.realms[1].id])
            let file = client.repairStore!.url(tenant: h.config.tenant, user: "lea")
            #expect(try FileManager.default.attributesOfItem(atPath: file.path)[.posixPermissions] as? Int == 0o600)
            #expect(try await client.repair(user: "lea") == .stillPending(repaired: 0, remaining: 1))
            try await restart(h.cluster.realms[1])
            #expect(await client.status(user: "lea").realms[1].state != .notRegistered)
            #expect(try await client.repair(user: "lea") == .completed(repaired: 1))
            #expect(await client.status(user: "lea").realms.allSatisfy { $0.state == .notRegistered })
            #expect(client.pendingChange(user: "lea") == nil)

            // A pending disable never deletes a registration made after it.
            try await client.register(key: key, password: "pw", user: "lea")
            await h.cluster.realms[1].stop()
            _ = try await client.disable(user: "lea")
            try await restart(h.cluster.realms[1])
            // Another device, without the pending disable, re-enables: realm 1 still holds the old record,
            // which only a reset (or the current password) may replace.
            let newer = try await h.client(transport: HTTPRealmTransport(timeout: .seconds(30))).register(key: key, password: "pw3", user: "lea", replace: .reset)
            #expect(try await client.repair(user: "lea") == .superseded)
            #expect(await client.status(user: "lea").activeVersion == newer.version)
        }
    }
}

@Suite("Vault: password policy (issue 11, problem 7)", .serialized)
struct VaultPasswordPolicyTests {
    /// Counts every call; answers nothing (a password refused up front must never get here).
    struct CountingTransport: RealmTransport {
        let calls = Mutex2<Int>(0)
        func call(_ request: VaultRequest, realm: PinnedRealm) async -> RealmReply {
            calls.withLock { $0 += 1 }
            return .failure(.unreachable("counting transport"))
        }
    }

    @Test("fewer than 6 characters (the default) is refused before anything is sent; vault.json can raise it")
    func minimumLength() async throws {
        let h = try await FlowHarness.start()
        try await stopping(h) {
            var raw = h.cluster.vaultConfiguration
            raw.policy = .init(FlowHarness.policy)
            let config = try raw.validated()
            #expect(config.minimumPasswordLength == 6)
            let counting = CountingTransport()
            let client = VaultClient(configuration: config, tokens: h.tenant, transport: counting)
            await #expect(throws: VaultError.passwordTooShort(minimum: 6)) {
                try await client.register(key: BackupKey(), password: "a", user: "max")
            }
            // Characters, not bytes: five accented letters (decomposed) are still five.
            await #expect(throws: VaultError.passwordTooShort(minimum: 6)) {
                try await client.register(key: BackupKey(), password: "e\u{301}e\u{301}e\u{301}e\u{301}e\u{301}", user: "max")
            }
            #expect(counting.calls.withLock { $0 } == 0)
            #expect(VaultError.passwordTooShort(minimum: 6).description.contains("at least 6 characters"))
            // Six characters pass the policy and reach the realms.
            let real = VaultClient(configuration: config, tokens: h.tenant, transport: HTTPRealmTransport(timeout: .seconds(30)))
            #expect(try await real.register(key: BackupKey(), password: "sixchr", user: "max").complete)
            raw.policy = .init(FlowHarness.policy, minPasswordLength: 12)
            let strict = VaultClient(configuration: try raw.validated(), tokens: h.tenant, transport: counting)
            await #expect(throws: VaultError.passwordTooShort(minimum: 12)) {
                try await strict.register(key: BackupKey(), password: "elevenchars", user: "max")
            }
            raw.policy = .init(FlowHarness.policy, minPasswordLength: 0)
            #expect(throws: VaultConfigurationError.self) { try raw.validated() }
        }
    }
}
