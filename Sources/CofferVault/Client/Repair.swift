import Foundation
import Crypto
import CofferCore

/// What the device keeps after a registration that some realms missed: `S`, the version, the
/// stretched password `h` (salted by this version) and the shares of the realms still pending.
/// Secret: stored only in a 0600 file of ``VaultRepairStore``, deleted once every realm converged.
/// `description` shows no secret.
public struct RegistrationRepair: Sendable, CustomStringConvertible {
    public var tenant: String
    public var user: String
    public var version: RecordVersion
    public var policy: VaultPolicy
    let secret: SymmetricKey
    let stretched: SymmetricKey
    let wrappedKey: [UInt8]
    var pendingShares: [Shamir.Share]
    /// The unlock keys of the registrations the pending realms may still hold (their replace proof),
    /// when the change was made with proof of the current password; nil otherwise.
    var replaceCredential: VaultReplaceCredential?

    public var description: String { "RegistrationRepair(\(user), version \(version.hex), \(pendingShares.count) realms pending)" }

    struct File: Codable {
        var tenant: String, user: String, version: String, policy: String, secret: String, stretched: String, wrappedKey: String
        var pending: [Pending]
        /// Absent in files written before replace proofs existed.
        var replace: [VaultReplaceCredential.FileEntry]?
        struct Pending: Codable { var x: UInt8; var share: String }
    }

    func encoded() throws -> Data {
        let f = File(tenant: tenant, user: user, version: version.hex, policy: policy.bytes.hexString,
                     secret: secret.withUnsafeBytes { Array($0) }.hexString, stretched: stretched.withUnsafeBytes { Array($0) }.hexString,
                     wrappedKey: wrappedKey.hexString, pending: pendingShares.map { .init(x: $0.x, share: $0.y.hexString) },
                     replace: replaceCredential?.fileEntries)
        return try JSONEncoder().encode(f)
    }

    init(tenant: String, user: String, version: RecordVersion, policy: VaultPolicy, secret: SymmetricKey, stretched: SymmetricKey,
         wrappedKey: [UInt8], pendingShares: [Shamir.Share], replaceCredential: VaultReplaceCredential? = nil) {
        self.tenant = tenant
        self.user = user
        self.version = version
        self.policy = policy
        self.secret = secret
        self.stretched = stretched
        self.wrappedKey = wrappedKey
        self.pendingShares = pendingShares
        self.replaceCredential = replaceCredential
    }

    init(data: Data) throws {
        let f = try JSONDecoder().decode(File.self, from: data)
        func hex(_ s: String) throws -> [UInt8] {
            guard let b = [UInt8](hexString: s) else { throw VaultConfigurationError("repair file: bad hex") }
            return b
        }
        self.init(tenant: f.tenant, user: f.user, version: try RecordVersion(bytes: try hex(f.version)), policy: try VaultPolicy(bytes: try hex(f.policy)),
                  secret: SymmetricKey(data: try hex(f.secret)), stretched: SymmetricKey(data: try hex(f.stretched)),
                  wrappedKey: try hex(f.wrappedKey), pendingShares: try f.pending.map { Shamir.Share(x: $0.x, y: try hex($0.share)) },
                  replaceCredential: try f.replace.map { try VaultReplaceCredential(fileEntries: $0) })
    }
}

/// A disable that some realms missed: the realms that may still hold a record of this account
/// (they would still answer the old password). No secret: a disable needs only a `delete` token.
public struct PendingDisable: Sendable, Equatable, CustomStringConvertible {
    public var tenant: String
    public var user: String
    /// Realms that were not reached (they may still hold a record).
    public var pendingRealms: [RealmID]

    public init(tenant: String, user: String, pendingRealms: [RealmID]) {
        self.tenant = tenant
        self.user = user
        self.pendingRealms = pendingRealms
    }

    public var description: String { "PendingDisable(\(user), \(pendingRealms.count) realms pending)" }

    struct File: Codable {
        var kind: String
        var tenant: String, user: String
        var realms: [String]
    }
}

/// A vault change (change of password, rotation, key rotation, enable over an old registration, or
/// disable) that took effect but has not reached every realm yet. Until it has, the realms listed in
/// ``realmsNotUpdated`` may still accept the old password or hold the old key.
public enum VaultPendingChange: Sendable, CustomStringConvertible {
    case registration(RegistrationRepair)
    case disable(PendingDisable)

    /// The realms that have not confirmed the change yet, in configuration order.
    public func realmsNotUpdated(in configuration: ValidatedVaultConfiguration) -> [RealmID] {
        switch self {
        case .registration(let r):
            let xs = Set(r.pendingShares.map(\.x))
            return configuration.realms.filter { xs.contains($0.x) }.map(\.id)
        case .disable(let d):
            return configuration.realms.map(\.id).filter { d.pendingRealms.contains($0) }
        }
    }

    /// `"registration"` or `"disable"`.
    public var kind: String {
        switch self {
        case .registration: return "registration"
        case .disable: return "disable"
        }
    }

    public var description: String {
        switch self {
        case .registration(let r): return r.description
        case .disable(let d): return d.description
        }
    }
}

/// Pending changes on this device: `$COFFER_HOME/vault/pending-<hash of tenant and user>.json`, 0600,
/// written durably (``PrivateFile``). One per account: a newer change replaces an older one.
public struct VaultRepairStore: Sendable {
    public let directory: URL

    /// `home` if given, else `$COFFER_HOME`, else `~/.config/coffer` (as the device key store).
    public init(home: URL? = nil) {
        let base: URL
        if let home { base = home } else if let env = ProcessInfo.processInfo.environment["COFFER_HOME"], !env.isEmpty {
            base = URL(fileURLWithPath: env, isDirectory: true)
        } else {
            base = FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".config/coffer", isDirectory: true)
        }
        directory = base.appendingPathComponent("vault", isDirectory: true)
    }

    /// The file that holds the account's pending change (whether or not one exists).
    public func url(tenant: String, user: String) -> URL {
        let id = Array(Array(SHA256.hash(data: lp(Array(tenant.utf8)) + lp(Array(user.utf8)))).prefix(16)).hexString
        return directory.appendingPathComponent("pending-\(id).json")
    }

    /// The pending registration repair, if that is what is pending.
    public func load(tenant: String, user: String) -> RegistrationRepair? {
        if case .registration(let r)? = loadChange(tenant: tenant, user: user) { return r }
        return nil
    }

    /// Whatever change is pending for the account (nil: none, or an unreadable file).
    public func loadChange(tenant: String, user: String) -> VaultPendingChange? {
        guard let data = try? Data(contentsOf: url(tenant: tenant, user: user)) else { return nil }
        if let d = try? JSONDecoder().decode(PendingDisable.File.self, from: data), d.kind == "disable" {
            let ids = d.realms.compactMap { RealmID(hex: $0) }
            guard ids.count == d.realms.count else { return nil }
            return .disable(PendingDisable(tenant: d.tenant, user: d.user, pendingRealms: ids))
        }
        return (try? RegistrationRepair(data: data)).map { .registration($0) }
    }

    /// Writes durably, 0600, under a temporary name, then renames.
    public func save(_ repair: RegistrationRepair) throws {
        try PrivateFile.save(try repair.encoded(), to: url(tenant: repair.tenant, user: repair.user))
    }

    /// Writes durably, 0600, under a temporary name, then renames.
    public func save(_ pending: PendingDisable) throws {
        let f = PendingDisable.File(kind: "disable", tenant: pending.tenant, user: pending.user, realms: pending.pendingRealms.map(\.hex))
        try PrivateFile.save(try JSONEncoder().encode(f), to: url(tenant: pending.tenant, user: pending.user))
    }

    public func remove(tenant: String, user: String) {
        try? FileManager.default.removeItem(at: url(tenant: tenant, user: user))
    }
}

/// Brings realms that missed a registration up to date, as a state machine with no I/O:
/// Q0 everywhere; only if at least `n - t + 1` realms still hold this version (it is still the
/// active one) the others get R1/R2 with the kept `S`, shares and `h`. A superseded repair is dropped.
public struct RepairMachine {
    public let configuration: ValidatedVaultConfiguration
    public private(set) var repair: RegistrationRepair
    let tokens: [RealmID: String]
    private var expected: [RealmID: RecordVersion] = [:]
    private var blinded: BlindedInput?
    public private(set) var converged: Set<RealmID> = []
    /// Realms that answered *locked*: done for this change, never revived.
    public private(set) var locked: Set<RealmID> = []

    public init(configuration: ValidatedVaultConfiguration, repair: RegistrationRepair, tokens: [RealmID: String]) {
        self.configuration = configuration
        self.repair = repair
        self.tokens = tokens
    }

    public func q0Requests() -> [RealmID: VaultRequest] {
        var out = [RealmID: VaultRequest]()
        for r in configuration.realms { if let t = tokens[r.id] { out[r.id] = .q0(Q0Request(token: t)) } }
        return out
    }

    /// Outcome of the Q0 round.
    public enum Plan { case superseded, done, repair([RealmID: VaultRequest]) }

    public mutating func receiveQ0(_ replies: [RealmID: RealmReply]) throws(VaultError) -> Plan {
        // Only an *active* record of this version holds it: a tombstone (locked) of any version is
        // never counted as holding, never a target and never revived (a repair must not hand out a
        // fresh guess budget that a lockout took away). A locked realm no longer accepts any
        // password, so for this change it is done.
        var active = [RealmID: RecordVersion]()
        var empty = Set<RealmID>()
        var locked = Set<RealmID>()
        for (id, reply) in replies {
            guard case .success(.q0(let a)) = reply else { continue }
            switch a.state {
            case .active: active[id] = a.version
            case .none: empty.insert(id)
            case .locked: locked.insert(id)
            }
        }
        let holding = active.filter { $0.value == repair.version }.map(\.key)
        converged = Set(holding)
        self.locked = locked
        let answered = active.count + empty.count + locked.count
        if holding.count < configuration.effectiveQuorum {
            // Our registration left at most t - 1 realms on other versions; t or more elsewhere
            // (another version, none, or locked) means a later registration, delete or lockout
            // replaced it: never overwrite that.
            if answered - holding.count >= configuration.threshold { return .superseded }
            throw .realmsUnavailable(down: [], needed: configuration.effectiveQuorum - holding.count)
        }
        let pendingXs = Set(repair.pendingShares.map(\.x))
        let targets = configuration.realms.filter { r in
            pendingXs.contains(r.x) && !locked.contains(r.id) && ((active[r.id] != nil && active[r.id] != repair.version) || empty.contains(r.id))
        }
        var reported = [RealmID: RecordVersion]()
        for (id, v) in active { reported[id] = v }
        for id in empty { reported[id] = .zero }
        if targets.isEmpty {
            repair.pendingShares.removeAll { s in configuration.realms.contains { $0.x == s.x && (converged.contains($0.id) || locked.contains($0.id)) } }
            return repair.pendingShares.isEmpty ? .done : .repair([:])
        }
        let b: BlindedInput
        do { b = try repair.stretched.withUnsafeBytes { try VaultOPRF.blind(Array($0)) } } catch { throw .policy("blinding failed") }
        blinded = b
        var out = [RealmID: VaultRequest]()
        for r in targets {
            expected[r.id] = reported[r.id]!
            out[r.id] = .r1(R1Request(token: tokens[r.id]!, blindedElement: b.blindedElementBytes))
        }
        return .repair(out)
    }

    public mutating func receiveR1(_ replies: [RealmID: RealmReply]) -> [RealmID: VaultRequest] {
        guard let blinded else { return [:] }
        let tenant = Array(configuration.tenant.utf8), user = Array(repair.user.utf8)
        let signing = VaultDerivation.recordSigningKey(secret: repair.secret)
        let vk = Array(signing.publicKey.rawRepresentation)
        let c = VaultDerivation.commitment(secret: repair.secret, version: repair.version, policy: repair.policy, n: configuration.n,
                                           t: configuration.threshold, verificationKey: vk, tenant: tenant, user: user)
        let u = VaultDerivation.unlockKey(secret: repair.secret)
        var out = [RealmID: VaultRequest]()
        for (id, reply) in replies {
            guard case .success(.r1(let a)) = reply, let realm = configuration.realms.first(where: { $0.id == id }),
                  let share = repair.pendingShares.first(where: { $0.x == realm.x }),
                  let rwd = try? VaultOPRF.finalize(blinded, evaluatedElement: a.evaluatedElement, proof: a.proof, publicKey: a.oprfPublicKey)
            else { continue }
            let masked = VaultDerivation.xor(share.y, VaultDerivation.mask(rwd: rwd, realmID: id))
            let message = VaultDerivation.recordMessage(version: repair.version, realmID: id, x: realm.x, oprfPublicKey: a.oprfPublicKey,
                                                        maskedShare: masked, policy: repair.policy)
            guard let sig = try? signing.signature(for: message) else { continue }
            // A realm still on an older active registration is replaced with the proof kept for it
            // (none kept: the realm refuses with replaceNotProven and stays pending).
            let current = expected[id] ?? .zero
            let proof = repair.replaceCredential?.proof(realmID: id, current: current, newVersion: repair.version, pendingID: a.pendingID)
                ?? zeros(WireSize.replaceProof)
            out[id] = .r2(R2Request(token: tokens[id]!, pendingID: a.pendingID, expectedVersion: current, version: repair.version,
                                    maskedShare: masked, commitment: c, verificationKey: vk, signature: Array(sig),
                                    unlockTag: VaultDerivation.unlockTag(unlockKey: u, realmID: id, version: repair.version),
                                    wrappedKey: repair.wrappedKey, policy: repair.policy, replaceProof: proof))
        }
        return out
    }

    /// Returns the repair still needed (nil when every pending realm converged).
    public mutating func receiveR2(_ replies: [RealmID: RealmReply]) -> RegistrationRepair? {
        for (id, reply) in replies {
            if case .success(.r2(let a)) = reply, a.version == repair.version { converged.insert(id) }
        }
        repair.pendingShares.removeAll { s in configuration.realms.contains { $0.x == s.x && (converged.contains($0.id) || locked.contains($0.id)) } }
        return repair.pendingShares.isEmpty ? nil : repair
    }
}

/// Finishes a disable that some realms missed, as a state machine with no I/O: Q0 (scope `delete`)
/// everywhere; if `t` or more realms hold one active version, a later registration replaced the
/// disable (dropped, never deleted); otherwise every pending realm that still holds a record gets a
/// delete with its ticket and version.
public struct DisableRepairMachine {
    public let configuration: ValidatedVaultConfiguration
    public private(set) var pending: PendingDisable
    let tokens: [RealmID: String]

    public init(configuration: ValidatedVaultConfiguration, pending: PendingDisable, tokens: [RealmID: String]) {
        self.configuration = configuration
        self.pending = pending
        self.tokens = tokens
    }

    public func q0Requests() -> [RealmID: VaultRequest] {
        var out = [RealmID: VaultRequest]()
        for r in configuration.realms { if let t = tokens[r.id] { out[r.id] = .q0(Q0Request(token: t)) } }
        return out
    }

    public enum Plan { case superseded, done, delete([RealmID: VaultRequest]) }

    public mutating func receiveQ0(_ replies: [RealmID: RealmReply]) -> Plan {
        var groups = [RecordVersion: Int]()
        var out = [RealmID: VaultRequest]()
        var cleared = Set<RealmID>()
        for (id, reply) in replies {
            guard case .success(.q0(let a)) = reply else { continue }
            if a.state == .active { groups[a.version, default: 0] += 1 }
            guard pending.pendingRealms.contains(id) else { continue }
            if a.state == .none { cleared.insert(id) } else if let t = tokens[id] {
                out[id] = .delete(DeleteRequest(token: t, ticket: a.ticket, expectedVersion: a.version))
            }
        }
        if groups.values.contains(where: { $0 >= configuration.threshold }) { return .superseded }
        pending.pendingRealms.removeAll { cleared.contains($0) }
        if pending.pendingRealms.isEmpty { return .done }
        return .delete(out)
    }

    /// Returns what is still pending (nil when every realm is cleared).
    public mutating func receiveDelete(_ replies: [RealmID: RealmReply]) -> PendingDisable? {
        for (id, reply) in replies {
            switch reply {
            case .success(.delete): pending.pendingRealms.removeAll { $0 == id }
            case .success(.error(let e)) where e.code == .notRegistered: pending.pendingRealms.removeAll { $0 == id }
            default: break
            }
        }
        return pending.pendingRealms.isEmpty ? nil : pending
    }
}
