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
    /// Takes effect once `n - t + 1` realms acknowledge; realms that did not are listed in
    /// ``RegistrationReport/pending`` and repaired by the next registration or recovery.
    /// - Throws: ``VaultError`` (`.realmsUnavailable`, `.notEffective`, `.policy`, `.token`).
    @discardableResult
    public func register(key: BackupKey, password: String, user: String, policy: VaultPolicy? = nil) async throws(VaultError) -> RegistrationReport {
        try await register(key: key.symmetricKey, password: password, user: user, policy: policy ?? configuration.policy)
    }

    func register(key: SymmetricKey, password: String, user: String, policy: VaultPolicy) async throws(VaultError) -> RegistrationReport {
        let tokens = await tokens(user: user, scope: .register)
        var machine = RegistrationMachine(configuration: configuration, user: user, key: key, policy: policy, tokens: tokens)
        let q0 = await transport.callAll(machine.q0Requests(), realms: configuration.realms)
        let r1 = await transport.callAll(try machine.receiveQ0(q0, password: password), realms: configuration.realms)
        let r2Requests = try machine.receiveR1(r1)
        if let s = machine.secretForTesting { secretObserver?(s) }
        let r2 = await transport.callAll(r2Requests, realms: configuration.realms)
        let report = try machine.receiveR2(r2)
        if let repairStore {
            // The newest effective registration replaces any older pending repair.
            if let repair = report.repair { try? repairStore.save(repair) } else { repairStore.remove(tenant: configuration.tenant, user: user) }
        }
        return report
    }

    /// What ``repair(user:)`` did.
    public enum RepairOutcome: Sendable, Equatable {
        /// Nothing was pending on this device.
        case nothingPending
        /// Every realm now holds the registration; the kept secrets are deleted.
        case completed(repaired: Int)
        /// Some realms are still unreachable; the repair stays pending.
        case stillPending(repaired: Int, remaining: Int)
        /// A later registration, delete or lockout replaced this one; the repair was dropped.
        case superseded
    }

    /// Brings realms that missed this device's last registration up to date (R1/R2 with the kept
    /// `S` and shares), only while that registration is still the active one.
    public func repair(user: String) async throws(VaultError) -> RepairOutcome {
        guard let repairStore, let pending = repairStore.load(tenant: configuration.tenant, user: user) else { return .nothingPending }
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

    /// Recovers the key with the password, then rotates the registration (new `S`, new OPRF
    /// keys, new version) with the same password and key.
    /// - Throws: ``VaultError``: `.wrongPassword(attemptsLeft:)`, `.locked`, `.notRegistered`,
    ///   `.realmsUnavailable`, `.realmFault` (naming the realms).
    public func recover(password: String, user: String, rotate: Bool = true) async throws(VaultError) -> RecoveryResult {
        let tokens = await tokens(user: user, scope: .recover)
        var machine = RecoveryMachine(configuration: configuration, user: user, tokens: tokens)
        let q0 = await transport.callAll(machine.q0Requests(), realms: configuration.realms)
        try machine.receiveQ0(q0)
        let q1 = await transport.callAll(try machine.q1Requests(password: password), realms: configuration.realms)
        let outcome = machine.receiveQ1(q1)
        // Q2 goes out whatever happened, so realms cannot tell success from failure by its presence.
        let q2 = await transport.callAll(machine.q2Requests(), realms: configuration.realms)
        switch outcome {
        case .wrongPassword(let left):
            if left <= 0 { throw .locked }
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
        if rotate {
            do {
                result.rotation = try await register(key: key.symmetricKey, password: password, user: user, policy: machine.policy)
            } catch {
                result.rotationError = error
            }
        }
        return result
    }

    /// A registration with the new password and the same key.
    @discardableResult
    public func changePassword(key: BackupKey, newPassword: String, user: String) async throws(VaultError) -> RegistrationReport {
        try await register(key: key, password: newPassword, user: user)
    }

    /// Deletes the registration at every realm (ticket + expectedVersion); effective once
    /// `n - t + 1` realms hold none. The 64-digit key keeps working.
    @discardableResult
    public func disable(user: String) async throws(VaultError) -> DisableReport {
        let tokens = await tokens(user: user, scope: .delete)
        var machine = DisableMachine(configuration: configuration, tokens: tokens)
        let q0 = await transport.callAll(machine.q0Requests(), realms: configuration.realms)
        let deletes = try machine.receiveQ0(q0)
        let answers = await transport.callAll(deletes, realms: configuration.realms)
        return try machine.receiveDelete(answers)
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
}
