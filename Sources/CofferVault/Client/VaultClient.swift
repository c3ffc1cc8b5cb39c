#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Crypto
import CofferCore

/// The vault client: drives the state machines over a transport, all realms in parallel.
///
/// ```swift
/// let config = try VaultConfiguration.load(from: url).validated()
/// let tenant = try await DevelopmentTenant.forConfiguration(raw, at: url)
/// let client = VaultClient(configuration: config, tokens: tenant)
/// try await client.register(key: key, password: "…", user: "alice")
/// let recovered = try await client.recover(password: "…", user: "alice").key
/// ```
public struct VaultClient: Sendable {
    public let configuration: ValidatedVaultConfiguration
    public let tokens: any TokenProvider
    public let transport: any RealmTransport
    /// Where the device keeps `S`, the version and pending shares until every realm converged
    /// (nil: not kept; realms that missed a registration are then repaired by the next one).
    public var repairStore: VaultRepairStore?
    /// How long a recovery keeps resending Q2 requests whose answers were lost (below the realms'
    /// 2-minute challenge lifetime). Default 60 s.
    public var q2RetryWindow: Duration = .seconds(60)
    /// Test hook: sees `S` of each registration and recovery (never used outside tests).
    var secretObserver: (@Sendable (SymmetricKey) -> Void)?

    public init(configuration: ValidatedVaultConfiguration, tokens: any TokenProvider,
                transport: any RealmTransport = HTTPRealmTransport(), repairStore: VaultRepairStore? = nil) {
        self.configuration = configuration
        self.tokens = tokens
        self.transport = transport
        self.repairStore = repairStore
    }

    /// Protects `key` under `password` for `user` (enable, change password, rotation).
    /// Takes effect once `n - t + 1` realms acknowledge; it is *complete* only when all `n` did
    /// (``RegistrationReport/complete``). Until then the realms in ``RegistrationReport/pending``
    /// may still accept the previous password and hold the previous key; with a
    /// ``repairStore`` the device keeps the change pending and ``repair(user:)`` finishes it.
    /// The password must have at least the configuration's ``ValidatedVaultConfiguration/minimumPasswordLength``
    /// characters; a shorter one is refused before anything is sent.
    ///
    /// A realm that holds an *active* registration for `user` is replaced only as `replace` allows:
    /// `.refuse` (the default) stops before anything is written when any realm reports one
    /// (``VaultError/Code/registrationExists``); `.proof` replaces with proof of the current
    /// password (``RecoveryResult/replaceCredential``, ``RegistrationReport/replaceCredential``);
    /// `.reset` replaces without it on `reset`-scoped tokens, and every realm counts the reset.
    /// - Throws: ``VaultError`` (`.passwordTooShort`, `.registrationExists`, `.realmsUnavailable`, `.notEffective`, `.policy`, `.token`).
    @discardableResult
    public func register(key: BackupKey, password: String, user: String, policy: VaultPolicy? = nil,
                         replace: VaultReplaceMode = .refuse) async throws(VaultError) -> RegistrationReport {
        try checkPasswordPolicy(password)
        return try await register(key: key.symmetricKey, password: password, user: user, policy: policy ?? configuration.policy, replace: replace)
    }

    /// Refuses a password shorter than the vault policy's minimum (counted in characters, after NFC).
    public func checkPasswordPolicy(_ password: String) throws(VaultError) {
        let length = password.precomposedStringWithCanonicalMapping.count
        guard length >= configuration.minimumPasswordLength else {
            throw .passwordTooShort(minimum: configuration.minimumPasswordLength)
        }
    }

    func register(key: SymmetricKey, password: String, user: String, policy: VaultPolicy,
                  replace: VaultReplaceMode) async throws(VaultError) -> RegistrationReport {
        var replace = replace
        if case .proof(let credential) = replace, let kept = repairStore?.load(tenant: configuration.tenant, user: user) {
            // Realms this device's pending change has not reached still hold an older version: the
            // pending change keeps what proves it (and its own version's `S`), so this registration
            // can replace them too.
            replace = .proof(credential.merging(VaultReplaceCredential(version: kept.version, secret: kept.secret)).merging(kept.replaceCredential))
        }
        let scope: VaultScope
        if case .reset = replace { scope = .reset } else { scope = .register }
        let tokens = await tokens(user: user, scope: scope)
        var machine = RegistrationMachine(configuration: configuration, user: user, key: key, policy: policy, tokens: tokens, replace: replace)
        let q0 = await transport.callAll(machine.q0Requests(), realms: configuration.realms)
        let r1 = await transport.callAll(try machine.receiveQ0(q0, password: password), realms: configuration.realms)
        let r2Requests = try machine.receiveR1(r1)
        if let s = machine.secretForTesting { secretObserver?(s) }
        let r2 = await transport.callAll(r2Requests, realms: configuration.realms)
        var report = try machine.receiveR2(r2)
        if let repairStore {
            // The newest effective change replaces any older pending one.
            if let repair = report.repair {
                do { try repairStore.save(repair) } catch { report.pendingNotSaved = "\(error)" }
            } else {
                repairStore.remove(tenant: configuration.tenant, user: user)
            }
        }
        return report
    }

    /// What ``repair(user:)`` did.
    public enum RepairOutcome: Sendable, Equatable {
        /// Nothing was pending on this device.
        case nothingPending
        /// Every realm now has the change; the pending record (and its secrets) is deleted.
        case completed(repaired: Int)
        /// Some realms are still unreachable; the change stays pending (``pendingChange(user:)`` lists them).
        case stillPending(repaired: Int, remaining: Int)
        /// A later registration, delete or lockout replaced this change; the pending record was dropped.
        case superseded
    }

    /// The change this device still has to bring to some realms (read from the device, no network).
    public func pendingChange(user: String) -> VaultPendingChange? {
        repairStore?.loadChange(tenant: configuration.tenant, user: user)
    }

    /// Finishes this device's pending change (a registration or a disable that some realms missed),
    /// only while it is still the newest one. Run it before every vault operation and every backup.
    public func repair(user: String) async throws(VaultError) -> RepairOutcome {
        guard let repairStore, let change = repairStore.loadChange(tenant: configuration.tenant, user: user) else { return .nothingPending }
        switch change {
        case .registration(let pending): return try await repairRegistration(pending, user: user, store: repairStore)
        case .disable(let pending): return await repairDisable(pending, user: user, store: repairStore)
        }
    }

    private func repairRegistration(_ pending: RegistrationRepair, user: String, store repairStore: VaultRepairStore) async throws(VaultError) -> RepairOutcome {
        let tokens = await tokens(user: user, scope: .register)
        var machine = RepairMachine(configuration: configuration, repair: pending, tokens: tokens)
        let q0 = await transport.callAll(machine.q0Requests(), realms: configuration.realms)
        let before = pending.pendingShares.count
        switch try machine.receiveQ0(q0) {
        case .superseded:
            repairStore.remove(tenant: configuration.tenant, user: user)
            return .superseded
        case .done:
            repairStore.remove(tenant: configuration.tenant, user: user)
            return .completed(repaired: 0)
        case .repair(let r1Requests):
            let r1 = await transport.callAll(r1Requests, realms: configuration.realms)
            let r2 = await transport.callAll(machine.receiveR1(r1), realms: configuration.realms)
            if let left = machine.receiveR2(r2) {
                try? repairStore.save(left)
                return .stillPending(repaired: before - left.pendingShares.count, remaining: left.pendingShares.count)
            }
            repairStore.remove(tenant: configuration.tenant, user: user)
            return .completed(repaired: before)
        }
    }

    private func repairDisable(_ pending: PendingDisable, user: String, store repairStore: VaultRepairStore) async -> RepairOutcome {
        let tokens = await tokens(user: user, scope: .delete)
        var machine = DisableRepairMachine(configuration: configuration, pending: pending, tokens: tokens)
        let q0 = await transport.callAll(machine.q0Requests(), realms: configuration.realms)
        let before = pending.pendingRealms.count
        switch machine.receiveQ0(q0) {
        case .superseded:
            repairStore.remove(tenant: configuration.tenant, user: user)
            return .superseded
        case .done:
            repairStore.remove(tenant: configuration.tenant, user: user)
            return .completed(repaired: before)
        case .delete(let requests):
            let answers = await transport.callAll(requests, realms: configuration.realms)
            if let left = machine.receiveDelete(answers) {
                try? repairStore.save(left)
                return .stillPending(repaired: before - left.pendingRealms.count, remaining: left.pendingRealms.count)
            }
            repairStore.remove(tenant: configuration.tenant, user: user)
            return .completed(repaired: before)
        }
    }

    /// True for a reply that may hide an answer the realm stored: an HTTP 5xx (a proxy or a broken
    /// connection on the way back) or a sealed internalError.
    static func answerMayBeLost(_ reply: RealmReply?) -> Bool {
        switch reply {
        case .failure(.httpStatus(let status))?: return status >= 500
        case .success(.error(let e))?: return e.code == .internalError
        default: return false
        }
    }

    /// Recovers the key with the password, then rotates the registration (new `S`, new OPRF
    /// keys, new version) with the same password and key.
    /// - Throws: ``VaultError``: `.wrongPassword(attemptsLeft:)`, `.locked`, `.notRegistered`,
    ///   `.realmsUnavailable`, `.realmFault` (naming the realms).
    public func recover(password: String, user: String, rotate: Bool = true) async throws(VaultError) -> RecoveryResult {
        let tokens = await tokens(user: user, scope: .recover)
        var machine = RecoveryMachine(configuration: configuration, user: user, tokens: tokens)
        let q0 = await transport.callAll(machine.q0Requests(), realms: configuration.realms)
        try machine.receiveQ0(q0)
        let q1Requests = try machine.q1Requests(password: password)
        var q1 = await transport.callAll(q1Requests, realms: configuration.realms)
        // A Q1 whose answer was lost after the realm may have counted it (an HTTP 5xx on the way
        // back, or the realm's internalError when its store gave up on a slow commit) is resent
        // once: the same ticket and blinded element, sealed afresh. The realm answers a guess it
        // counted with the stored answer and counts nothing more (VAULT.md), so a lost answer does
        // not cost the user a guess at that realm. A refused connection or a timeout is not resent
        // (a realm that is down, or hangs, would only add its delay to every recovery).
        let lost = q1Requests.filter { id, _ in Self.answerMayBeLost(q1[id]) }
        if !lost.isEmpty {
            try? await Task.sleep(for: .milliseconds(200))
            for (id, reply) in await transport.callAll(lost, realms: configuration.realms) { q1[id] = reply }
        }
        let outcome = machine.receiveQ1(q1)
        // Q2 goes out whatever happened, so realms cannot tell success from failure by its presence.
        // Made once: a resend must be byte-identical (the random proofs of a failure included).
        let q2Requests = machine.q2Requests()
        var q2 = await transport.callAll(q2Requests, realms: configuration.realms)
        if outcome == .recovered {
            // A Q2 whose answer was lost (transport failure) is resent, same body, fresh channel,
            // within the challenge's lifetime: the realm answers a byte-identical retry with the
            // outcome it stored, so a dropped answer never makes the user spend a new guess.
            let deadline = ContinuousClock.now + q2RetryWindow
            var delay = Duration.milliseconds(200)
            while ContinuousClock.now + delay < deadline {
                let lost = q2Requests.filter { id, _ in if case .failure? = q2[id] { return true } else { return false } }
                if lost.isEmpty { break }
                try? await Task.sleep(for: delay)
                delay *= 2
                for (id, reply) in await transport.callAll(lost, realms: configuration.realms) { q2[id] = reply }
            }
        }
        switch outcome {
        case .wrongPassword(let left):
            // `left` is 0 only when n - t + 1 realms said so (RecoveryMachine.quorumAttemptsLeft).
            if left <= 0 { throw .locked }
            let claims = machine.unconfirmedLockClaims
            if !claims.isEmpty { throw .lockNotConfirmed(attemptsLeft: left, claiming: claims) }
            throw .wrongPassword(attemptsLeft: left)
        case .failed(let error):
            throw error
        case .recovered:
            break
        }
        if let s = machine.secretForTesting { secretObserver?(s) }
        let k = try machine.receiveQ2(q2)
        let key: BackupKey
        do { key = try k.withUnsafeBytes { try BackupKey(bytes: Array($0)) } } catch {
            throw .realmFault(faulty: [], down: [])
        }
        var result = RecoveryResult(key: key, version: machine.version, faulty: machine.faultyRealms, down: machine.downRealms)
        result.replaceCredential = machine.replaceCredential
        if rotate, let credential = machine.replaceCredential {
            do {
                let rotation = try await register(key: key.symmetricKey, password: password, user: user, policy: machine.policy,
                                                  replace: .proof(credential))
                result.rotation = rotation
                result.replaceCredential = rotation.replaceCredential ?? credential
            } catch {
                result.rotationError = error
            }
        }
        return result
    }

    /// Changes the password: recovers with `currentPassword` (one guess, as any recovery; a wrong one
    /// changes nothing), then registers the recovered key under `newPassword` with proof of the
    /// current password at every realm. Complete only when ``RegistrationReport/complete``; until
    /// then the realms in ``RegistrationReport/pending`` still accept the old password.
    /// - Throws: ``VaultError``: the recovery's (`.wrongPassword`, `.locked`, `.notRegistered`, …), or the registration's.
    @discardableResult
    public func changePassword(currentPassword: String, newPassword: String, user: String) async throws(VaultError) -> RegistrationReport {
        try checkPasswordPolicy(newPassword)
        let recovered = try await recover(password: currentPassword, user: user, rotate: false)
        guard let credential = recovered.replaceCredential else { throw .realmFault(faulty: recovered.faulty, down: recovered.down) }
        return try await register(key: recovered.key, password: newPassword, user: user, replace: .proof(credential))
    }

    /// Deletes the registration at every realm (ticket + expectedVersion); effective once
    /// `n - t + 1` realms hold none, complete only when all `n` do (``DisableReport/complete``).
    /// Until then, with a ``repairStore``, the device keeps the disable pending and
    /// ``repair(user:)`` finishes it. The 64-digit key keeps working.
    @discardableResult
    public func disable(user: String) async throws(VaultError) -> DisableReport {
        let tokens = await tokens(user: user, scope: .delete)
        var machine = DisableMachine(configuration: configuration, tokens: tokens)
        let q0 = await transport.callAll(machine.q0Requests(), realms: configuration.realms)
        let deletes = try machine.receiveQ0(q0)
        let answers = await transport.callAll(deletes, realms: configuration.realms)
        var report = try machine.receiveDelete(answers)
        if let repairStore {
            if report.complete {
                repairStore.remove(tenant: configuration.tenant, user: user)
            } else {
                let pending = PendingDisable(tenant: configuration.tenant, user: user, pendingRealms: report.remaining.map(\.realmID))
                do { try repairStore.save(pending) } catch { report.pendingNotSaved = "\(error)" }
            }
        }
        return report
    }

    /// Which realms hold what, guesses left, which are down. Costs no guess.
    public func status(user: String) async -> VaultStatus {
        let tokens = await tokens(user: user, scope: .status)
        var requests = [RealmID: VaultRequest]()
        for (id, t) in tokens { requests[id] = .q0(Q0Request(token: t)) }
        let replies = await transport.callAll(requests, realms: configuration.realms)
        return VaultStatus.from(replies, configuration: configuration)
    }

    /// One token per realm; realms whose token cannot be had are left out (and reported down).
    func tokens(user: String, scope: VaultScope) async -> [RealmID: String] {
        var out = [RealmID: String]()
        for realm in configuration.realms {
            if let t = try? await tokens.token(user: user, realmID: realm.id, scope: scope) { out[realm.id] = t }
        }
        return out
    }
}

/// A successful recovery.
public struct RecoveryResult: Sendable {
    /// The recovered backup key `K`.
    public var key: BackupKey
    /// The version it was recovered from.
    public var version: RecordVersion
    /// Realms that answered invalidly or inconsistently (recovery succeeded without them).
    public var faulty: [RealmProblem]
    /// Realms that were unreachable or refused.
    public var down: [RealmProblem]
    /// The rotation that followed (new version), if it took effect.
    public var rotation: RegistrationReport?
    /// Why the rotation did not take effect (the key is recovered anyway; the old registration stays).
    public var rotationError: VaultError?
    /// Proof of the current password for the registration now active (the rotation's when it took
    /// effect, with the recovered version for realms it has not reached): pass it as
    /// `.proof(...)` to ``VaultClient/register(key:password:user:policy:replace:)`` to replace it
    /// (as `key rotate` does). Secret, in memory.
    public var replaceCredential: VaultReplaceCredential?
}
