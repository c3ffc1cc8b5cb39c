#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Crypto

/// Registration as a state machine with no I/O (Q0 → R1 → R2). The driver sends each batch of
/// requests to the realms in parallel and feeds the replies back.
///
/// Used for enable, change password, rotation after recovery, and repair.
public struct RegistrationMachine {
    public let configuration: ValidatedVaultConfiguration
    public let user: String
    public let policy: VaultPolicy
    let key: SymmetricKey
    let tokens: [RealmID: String]
    let tenantBytes: [UInt8]
    let userBytes: [UInt8]

    /// Per realm: the version it reported in Q0 (zero = none): the R2 `expectedVersion`.
    public private(set) var expectedVersions: [RealmID: RecordVersion] = [:]
    /// Realms that did not take part, with the reason.
    public private(set) var problems: [RealmID: RealmProblem] = [:]
    /// The new version.
    public let version: RecordVersion
    /// How a realm that holds an active registration is treated (refused, proven, or reset).
    public let replace: VaultReplaceMode
    /// Per realm: the state it reported in Q0.
    private var reportedStates: [RealmID: RecordState] = [:]
    private var blinded: BlindedInput?
    private var secret: SymmetricKey?
    private var stretched: SymmetricKey?
    private var shares: [Shamir.Share] = []
    private var wrapped: [UInt8] = []
    private var r1Realms: [RealmID] = []

    /// - Parameters:
    ///   - key: `K`, the backup key to protect.
    ///   - tokens: a `register`-scope token per realm (realms without one are treated as down).
    public init(configuration: ValidatedVaultConfiguration, user: String, key: SymmetricKey, policy: VaultPolicy,
                tokens: [RealmID: String], version: RecordVersion = .random(), replace: VaultReplaceMode = .refuse) {
        self.configuration = configuration
        self.user = user
        self.key = key
        self.policy = policy
        self.tokens = tokens
        self.tenantBytes = Array(configuration.tenant.utf8)
        self.userBytes = Array(user.utf8)
        self.version = version
        self.replace = replace
    }

    func realm(_ id: RealmID) -> PinnedRealm? { configuration.realms.first { $0.id == id } }

    mutating func note(_ id: RealmID, _ reason: String) {
        problems[id] = RealmProblem(realmID: id, url: realm(id)?.baseURL ?? "?", reason: reason)
    }

    /// Step 1: Q0 to every realm that has a token.
    public mutating func q0Requests() -> [RealmID: VaultRequest] {
        var out = [RealmID: VaultRequest]()
        for r in configuration.realms {
            if let t = tokens[r.id] { out[r.id] = .q0(Q0Request(token: t)) } else { note(r.id, "no token") }
        }
        return out
    }

    /// Step 2: records each realm's current version; then stretches the password and returns R1
    /// requests. Throws when fewer than `n - t + 1` realms can take part (nothing changed).
    public mutating func receiveQ0(_ replies: [RealmID: RealmReply], password: String) throws(VaultError) -> [RealmID: VaultRequest] {
        for (id, reply) in replies {
            switch reply {
            case .success(.q0(let a)):
                expectedVersions[id] = a.version
                reportedStates[id] = a.state
            case .success(.error(let e)): note(id, "refused: \(e)")
            case .success: note(id, "answered with the wrong message type")
            case .failure(let f): note(id, f.description)
            }
        }
        if case .refuse = replace {
            // Never overwrite a live registration unasked: stop before anything is written.
            let active = configuration.realms.filter { reportedStates[$0.id] == .active }
            if !active.isEmpty {
                throw .registrationExists(realms: active.map {
                    RealmProblem(realmID: $0.id, url: $0.baseURL, reason: "holds an active registration (version \(expectedVersions[$0.id] ?? .zero))")
                })
            }
        }
        try requireQuorum(expectedVersions.count, "registration")
        let salt = VaultDerivation.salt(version: version, tenant: tenantBytes, user: userBytes)
        let h: SymmetricKey
        do { h = try VaultDerivation.stretch(password: password, salt: salt, policy: policy) } catch {
            throw .policy("scrypt failed: \(error)")
        }
        let b: BlindedInput
        do { b = try h.withUnsafeBytes { try VaultOPRF.blind(Array($0)) } } catch { throw .policy("blinding failed") }
        blinded = b
        stretched = h
        var out = [RealmID: VaultRequest]()
        for id in expectedVersions.keys { out[id] = .r1(R1Request(token: tokens[id]!, blindedElement: b.blindedElementBytes)) }
        return out
    }

    /// Step 3: finalizes each R1 evaluation (proof verified under the returned `pk_i`), makes `S`,
    /// the shares, `vk`, `C`, tags and `W`; returns R2 requests.
    public mutating func receiveR1(_ replies: [RealmID: RealmReply]) throws(VaultError) -> [RealmID: VaultRequest] {
        guard let blinded else { preconditionFailure("receiveR1 before receiveQ0") }
        var rwd = [RealmID: [UInt8]]()
        var answers = [RealmID: R1Answer]()
        for (id, reply) in replies {
            switch reply {
            case .success(.r1(let a)):
                do {
                    rwd[id] = try VaultOPRF.finalize(blinded, evaluatedElement: a.evaluatedElement, proof: a.proof, publicKey: a.oprfPublicKey)
                    answers[id] = a
                } catch {
                    note(id, "invalid evaluation (\(error))")
                }
            case .success(.error(let e)): note(id, "refused: \(e)")
            case .success: note(id, "answered with the wrong message type")
            case .failure(let f): note(id, f.description)
            }
        }
        try requireQuorum(rwd.count, "registration")
        let s = SymmetricKey(size: .bits256)
        secret = s
        let sBytes = s.withUnsafeBytes { Array($0) }
        let shares: [Shamir.Share]
        do {
            shares = try Shamir.split(sBytes, threshold: configuration.threshold, xs: configuration.realms.map(\.x))
        } catch {
            preconditionFailure("validated configuration has bad x: \(error)")
        }
        let signing = VaultDerivation.recordSigningKey(secret: s)
        let vk = Array(signing.publicKey.rawRepresentation)
        let c = VaultDerivation.commitment(secret: s, version: version, policy: policy, n: configuration.n, t: configuration.threshold,
                                           verificationKey: vk, tenant: tenantBytes, user: userBytes)
        let u = VaultDerivation.unlockKey(secret: s)
        let w: [UInt8]
        do { w = try VaultDerivation.wrap(key: key, secret: s, version: version, tenant: tenantBytes, user: userBytes) } catch {
            preconditionFailure("AES-GCM seal failed: \(error)")
        }
        self.shares = shares
        self.wrapped = w
        var out = [RealmID: VaultRequest]()
        for (id, a) in answers {
            guard let realm = realm(id), let share = shares.first(where: { $0.x == realm.x }) else { continue }
            let masked = VaultDerivation.xor(share.y, VaultDerivation.mask(rwd: rwd[id]!, realmID: id))
            let message = VaultDerivation.recordMessage(version: version, realmID: id, x: realm.x, oprfPublicKey: a.oprfPublicKey,
                                                        maskedShare: masked, policy: policy)
            let sig: [UInt8]
            do { sig = Array(try signing.signature(for: message)) } catch { preconditionFailure("Ed25519 sign failed") }
            let current = expectedVersions[id] ?? .zero
            var proof = zeros(WireSize.replaceProof)
            if case .proof(let credential) = replace, reportedStates[id] == .active {
                proof = credential.proof(realmID: id, current: current, newVersion: version, pendingID: a.pendingID)
            }
            out[id] = .r2(R2Request(token: tokens[id]!, pendingID: a.pendingID, expectedVersion: current,
                                    version: version, maskedShare: masked, commitment: c, verificationKey: vk, signature: sig,
                                    unlockTag: VaultDerivation.unlockTag(unlockKey: u, realmID: id, version: version),
                                    wrappedKey: w, policy: policy, replaceProof: proof))
        }
        r1Realms = Array(answers.keys)
        return out
    }

    /// Step 4: counts acknowledgements. Effective at `n - t + 1`.
    public mutating func receiveR2(_ replies: [RealmID: RealmReply]) throws(VaultError) -> RegistrationReport {
        var acked = [RealmID]()
        var notProven = [RealmID]()
        for (id, reply) in replies {
            switch reply {
            case .success(.r2(let a)) where a.version == version: acked.append(id)
            case .success(.r2): note(id, "acknowledged another version")
            case .success(.error(let e)) where e.code == .versionMismatch:
                note(id, "its registration changed meanwhile (now \(e.currentVersion)); retry")
            case .success(.error(let e)) where e.code == .replaceNotProven:
                notProven.append(id)
                note(id, "holds an active registration (version \(expectedVersions[id] ?? .zero)) that this device cannot prove the current password for")
            case .success(.error(let e)): note(id, "refused: \(e)")
            case .success: note(id, "answered with the wrong message type")
            case .failure(let f): note(id, f.description)
            }
        }
        let order = configuration.realms.map(\.id)
        acked.sort { order.firstIndex(of: $0)! < order.firstIndex(of: $1)! }
        for id in acked { problems[id] = nil }
        if acked.count < configuration.effectiveQuorum, !notProven.isEmpty {
            throw .registrationExists(realms: configuration.realms.filter { notProven.contains($0.id) }.compactMap { problems[$0.id] })
        }
        try requireQuorum(acked.count, "registration", acknowledged: true)
        let pending = order.filter { !acked.contains($0) }
        var repair: RegistrationRepair? = nil
        // What this device can replace from now on: the new version, and the versions it could
        // replace before (realms this change has not reached yet still hold one of those).
        var credential: VaultReplaceCredential? = nil
        if let secret {
            credential = VaultReplaceCredential(version: version, secret: secret)
            if case .proof(let old) = replace { credential = credential!.merging(old) }
        }
        if !pending.isEmpty, let secret, let stretched {
            // The pending realms may still hold an active older registration: the repair needs
            // the proof for it (only the versions they reported, or all known when they did not answer).
            var stale: VaultReplaceCredential? = nil
            if case .proof(let old) = replace {
                let reported = Set(pending.compactMap { expectedVersions[$0] }.filter { !$0.isZero })
                stale = pending.allSatisfy({ expectedVersions[$0] != nil }) ? old.restricted(to: reported) : old
            }
            repair = RegistrationRepair(
                tenant: configuration.tenant, user: user, version: version, policy: policy, secret: secret, stretched: stretched,
                wrappedKey: wrapped, pendingShares: shares.filter { s in pending.contains { realm($0)?.x == s.x } },
                replaceCredential: stale)
        }
        var report = RegistrationReport(version: version, acknowledged: acked,
                                        pending: pending.map { problems[$0] ?? RealmProblem(realmID: $0, url: realm($0)?.baseURL ?? "?", reason: "no answer") },
                                        repair: repair)
        report.replaceCredential = credential
        return report
    }

    /// The new `S` (after `receiveR1`), for tests that check no realm ever sees it.
    var secretForTesting: SymmetricKey? { secret }

    private func requireQuorum(_ count: Int, _ op: String, acknowledged: Bool = false) throws(VaultError) {
        let needed = configuration.effectiveQuorum
        guard count >= needed else {
            let list = configuration.realms.compactMap { problems[$0.id] }
            if acknowledged { throw .notEffective(operation: op, acknowledged: count, needed: needed, problems: list) }
            throw .realmsUnavailable(down: list, needed: needed - count)
        }
    }
}

/// The result of a registration that took effect.
public struct RegistrationReport: Sendable, Equatable {
    /// The new version, now active.
    public var version: RecordVersion
    /// Realms that stored it.
    public var acknowledged: [RealmID]
    /// Realms that did not (yet): until ``VaultClient/repair(user:)`` brings them up to date they
    /// keep whatever they held before (the previous password and key still work there).
    public var pending: [RealmProblem]
    /// What the device keeps (0600) until every realm converged; nil when none is pending.
    public var repair: RegistrationRepair?
    /// Set when the pending change could not be written on this device (why); nil otherwise.
    public var pendingNotSaved: String?
    /// What lets this device replace the registration again without a recovery (the new version,
    /// and the versions realms this change has not reached yet may still hold). Secret, in memory.
    public var replaceCredential: VaultReplaceCredential?

    /// True only when every one of the `n` realms acknowledged: only then does nothing accept the
    /// previous password or hold the previous key.
    public var complete: Bool { pending.isEmpty }

    public static func == (a: Self, b: Self) -> Bool {
        a.version == b.version && a.acknowledged == b.acknowledged && a.pending == b.pending
    }
}
