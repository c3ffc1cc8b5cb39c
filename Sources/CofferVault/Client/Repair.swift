import Foundation
import Crypto
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

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

    public var description: String { "RegistrationRepair(\(user), version \(version.hex), \(pendingShares.count) realms pending)" }

    struct File: Codable {
        var tenant: String, user: String, version: String, policy: String, secret: String, stretched: String, wrappedKey: String
        var pending: [Pending]
        struct Pending: Codable { var x: UInt8; var share: String }
    }

    func encoded() throws -> Data {
        let f = File(tenant: tenant, user: user, version: version.hex, policy: policy.bytes.hexString,
                     secret: secret.withUnsafeBytes { Array($0) }.hexString, stretched: stretched.withUnsafeBytes { Array($0) }.hexString,
                     wrappedKey: wrappedKey.hexString, pending: pendingShares.map { .init(x: $0.x, share: $0.y.hexString) })
        return try JSONEncoder().encode(f)
    }

    init(tenant: String, user: String, version: RecordVersion, policy: VaultPolicy, secret: SymmetricKey, stretched: SymmetricKey,
         wrappedKey: [UInt8], pendingShares: [Shamir.Share]) {
        self.tenant = tenant
        self.user = user
        self.version = version
        self.policy = policy
        self.secret = secret
        self.stretched = stretched
        self.wrappedKey = wrappedKey
        self.pendingShares = pendingShares
    }

    init(data: Data) throws {
        let f = try JSONDecoder().decode(File.self, from: data)
        func hex(_ s: String) throws -> [UInt8] {
            guard let b = [UInt8](hexString: s) else { throw VaultConfigurationError("repair file: bad hex") }
            return b
        }
        self.init(tenant: f.tenant, user: f.user, version: try RecordVersion(bytes: try hex(f.version)), policy: try VaultPolicy(bytes: try hex(f.policy)),
                  secret: SymmetricKey(data: try hex(f.secret)), stretched: SymmetricKey(data: try hex(f.stretched)),
                  wrappedKey: try hex(f.wrappedKey), pendingShares: try f.pending.map { Shamir.Share(x: $0.x, y: try hex($0.share)) })
    }
}

/// Pending repairs on this device: `$COFFER_HOME/vault/pending-<hash of tenant and user>.json`, 0600.
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

    func url(tenant: String, user: String) -> URL {
        let id = Array(Array(SHA256.hash(data: lp(Array(tenant.utf8)) + lp(Array(user.utf8)))).prefix(16)).hexString
        return directory.appendingPathComponent("pending-\(id).json")
    }

    public func load(tenant: String, user: String) -> RegistrationRepair? {
        guard let data = try? Data(contentsOf: url(tenant: tenant, user: user)) else { return nil }
        return try? RegistrationRepair(data: data)
    }

    /// Writes 0600 under a temporary name, then renames.
    public func save(_ repair: RegistrationRepair) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let target = url(tenant: repair.tenant, user: repair.user)
        let tmp = directory.appendingPathComponent(".\(UUID().uuidString).tmp")
        guard FileManager.default.createFile(atPath: tmp.path, contents: try repair.encoded(), attributes: [.posixPermissions: 0o600]) else {
            throw VaultConfigurationError("cannot write \(tmp.path)")
        }
        guard rename(tmp.path, target.path) == 0 else {
            try? FileManager.default.removeItem(at: tmp)
            throw VaultConfigurationError("cannot move \(tmp.path) into place")
        }
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
        var reported = [RealmID: RecordVersion]()
        for (id, reply) in replies { if case .success(.q0(let a)) = reply { reported[id] = a.version } }
        let holding = reported.filter { $0.value == repair.version }.map(\.key)
        converged = Set(holding)
        if holding.count < configuration.effectiveQuorum {
            // Our registration left at most t - 1 realms on other versions; t or more elsewhere
            // means a later registration, delete or lockout replaced it: never overwrite that.
            if reported.count - holding.count >= configuration.threshold { return .superseded }
            throw .realmsUnavailable(down: [], needed: configuration.effectiveQuorum - holding.count)
        }
        let pendingXs = Set(repair.pendingShares.map(\.x))
        let targets = configuration.realms.filter { pendingXs.contains($0.x) && reported[$0.id] != nil && reported[$0.id] != repair.version }
        if targets.isEmpty {
            let allDone = repair.pendingShares.allSatisfy { s in configuration.realms.contains { $0.x == s.x && converged.contains($0.id) } }
            return allDone ? .done : .repair([:])
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
            out[id] = .r2(R2Request(token: tokens[id]!, pendingID: a.pendingID, expectedVersion: expected[id] ?? .zero, version: repair.version,
                                    maskedShare: masked, commitment: c, verificationKey: vk, signature: Array(sig),
                                    unlockTag: VaultDerivation.unlockTag(unlockKey: u, realmID: id, version: repair.version),
                                    wrappedKey: repair.wrappedKey, policy: repair.policy))
        }
        return out
    }

    /// Returns the repair still needed (nil when every pending realm converged).
    public mutating func receiveR2(_ replies: [RealmID: RealmReply]) -> RegistrationRepair? {
        for (id, reply) in replies {
            if case .success(.r2(let a)) = reply, a.version == repair.version { converged.insert(id) }
        }
        repair.pendingShares.removeAll { s in configuration.realms.contains { $0.x == s.x && converged.contains($0.id) } }
        return repair.pendingShares.isEmpty ? nil : repair
    }
}
