#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Crypto
import CofferCore

/// Recovery as a state machine with no I/O (Q0 → Q1 → Q2).
///
/// Q0 selects a group of at least `t` realms with byte-identical `(version, policy, C, vk)`. Q1
/// goes to every realm of the group; an answer is valid only if `sig_i` verifies under `vk` (with
/// `x_i` from the configuration) and the VOPRF proof verifies under the signed `pk_i`. Valid shares
/// are interpolated by `t`-subsets until one reproduces `C`. Q2 then goes to every realm that
/// answered Q1, with real unlock proofs on success and random ones on failure.
public struct RecoveryMachine {
    public let configuration: ValidatedVaultConfiguration
    public let user: String
    let tokens: [RealmID: String]
    let tenantBytes: [UInt8]
    let userBytes: [UInt8]

    /// The selected group's record.
    public private(set) var version: RecordVersion = .zero
    public private(set) var policy: VaultPolicy = .default
    private var commitment: [UInt8] = []
    private var verificationKey: [UInt8] = []
    private var tickets: [RealmID: Ticket] = [:]
    /// Realms outside the group (stale, unreachable, refusing), with the reason.
    public private(set) var down: [RealmID: RealmProblem] = [:]
    /// Realms whose answers were invalid or inconsistent.
    public private(set) var faulty: [RealmID: RealmProblem] = [:]
    /// Realms whose version differs from the group's (repaired by the rotation that follows).
    public private(set) var stale: [RealmID] = []
    private var blinded: BlindedInput?
    private var challenges: [RealmID: Challenge] = [:]
    private var secret: SymmetricKey?
    private var attemptsLeft: Int = 0

    public init(configuration: ValidatedVaultConfiguration, user: String, tokens: [RealmID: String]) {
        self.configuration = configuration
        self.user = user
        self.tokens = tokens
        self.tenantBytes = Array(configuration.tenant.utf8)
        self.userBytes = Array(user.utf8)
    }

    func realm(_ id: RealmID) -> PinnedRealm? { configuration.realms.first { $0.id == id } }
    func problem(_ id: RealmID, _ reason: String) -> RealmProblem {
        RealmProblem(realmID: id, url: realm(id)?.baseURL ?? "?", reason: reason)
    }
    func ordered(_ d: [RealmID: RealmProblem]) -> [RealmProblem] { configuration.realms.compactMap { d[$0.id] } }

    /// Step 1: Q0 (scope `recover`) to every realm with a token.
    public mutating func q0Requests() -> [RealmID: VaultRequest] {
        var out = [RealmID: VaultRequest]()
        for r in configuration.realms {
            if let t = tokens[r.id] { out[r.id] = .q0(Q0Request(token: t)) } else { down[r.id] = problem(r.id, "no token") }
        }
        return out
    }

    private struct GroupKey: Hashable {
        let version: RecordVersion, policy: [UInt8], commitment: [UInt8], vk: [UInt8]
    }

    /// Step 2: selects the group. Throws *not registered*, *locked*, *realms unavailable* or
    /// *realm fault* when no group of `t` consistent realms exists.
    public mutating func receiveQ0(_ replies: [RealmID: RealmReply]) throws(VaultError) {
        let t = configuration.threshold, n = configuration.n
        var groups = [GroupKey: [RealmID]]()
        var answers = [RealmID: Q0Answer]()
        var locked = 0, none = 0
        for (id, reply) in replies {
            switch reply {
            case .success(.q0(let a)):
                switch a.state {
                case .active:
                    answers[id] = a
                    groups[GroupKey(version: a.version, policy: a.policy!.bytes, commitment: a.commitment, vk: a.verificationKey), default: []].append(id)
                case .locked: locked += 1; down[id] = problem(id, "locked")
                case .none: none += 1; down[id] = problem(id, "not registered")
                }
            case .success(.error(let e)): down[id] = problem(id, "refused: \(e)")
            case .success: down[id] = problem(id, "answered with the wrong message type")
            case .failure(let f): down[id] = problem(id, f.description)
            }
        }
        let best = groups.max { $0.value.count < $1.value.count }
        if let best, best.value.count >= t {
            version = best.key.version
            commitment = best.key.commitment
            verificationKey = best.key.vk
            policy = try! VaultPolicy(bytes: best.key.policy)  // decoded and bounded already
            for id in best.value { tickets[id] = answers[id]!.ticket }
            for (id, a) in answers where !best.value.contains(id) {
                stale.append(id)
                down[id] = problem(id, "holds another registration (\(a.version))")
            }
            for (id, p) in down where p.reason == "locked" || p.reason == "not registered" { stale.append(id) }
            attemptsLeft = Self.quorumAttemptsLeft(best.value.map { Int(answers[$0]!.attemptsLeft) }, n: n, t: t)
            return
        }
        let largest = best?.value.count ?? 0
        // No t consistent realms. Decide what the honest reading is.
        // *Locked* is believed only when n - t + 1 realms say so (fewer could be lying); likewise
        // *not registered*. Fewer such claims without a group are a disagreement, named below.
        if locked >= n - t + 1 { throw .locked }
        if none >= n - t + 1 { throw .notRegistered }
        if locked > 0 && locked + none > n - t {
            var fault = [RealmID: RealmProblem]()
            for (id, p) in down where p.reason == "locked" || p.reason == "not registered" {
                fault[id] = problem(id, "reports \(p.reason), but fewer than \(n - t + 1) realms confirm it")
            }
            var rest = down
            for id in fault.keys { rest[id] = nil }
            throw .realmFault(faulty: ordered(fault), down: ordered(rest))
        }
        let answered = answers.count + locked + none
        if answered >= t && groups.count > 1 {
            // Enough answered but they disagree: name everyone outside the largest group.
            var fault = [RealmID: RealmProblem]()
            for (id, a) in answers where !(best?.value.contains(id) ?? false) {
                fault[id] = problem(id, "reports a registration (\(a.version)) that too few realms share")
            }
            throw .realmFault(faulty: ordered(fault), down: ordered(down))
        }
        throw .realmsUnavailable(down: ordered(down), needed: t - largest)
    }

    /// Guesses left before this attempt (as the quorum reported, ``quorumAttemptsLeft(_:n:t:)``).
    public var attemptsLeftBeforeGuess: Int { attemptsLeft }

    /// Realms whose Q1 answer claimed *locked* or no guesses left while fewer than `n - t + 1`
    /// realms agreed: reported, never believed.
    public private(set) var unconfirmedLockClaims: [RealmProblem] = []

    /// The guesses left that the client believes, from the realms' answers (each sealed to this
    /// request, so authenticated per realm): 0 (*locked*) only when at least `n - t + 1` realms
    /// report 0; otherwise the smallest non-zero value (conservative), and the realms that claimed
    /// 0 are named (``unconfirmedLockClaims``). So fewer than `n - t + 1` lying realms cannot make
    /// the client report a lockout; they can at most understate the guesses left (never to 0).
    public static func quorumAttemptsLeft(_ values: [Int], n: Int, t: Int) -> Int {
        let zeros = values.filter { $0 <= 0 }.count
        if zeros >= n - t + 1 { return 0 }
        return values.filter { $0 > 0 }.min() ?? 0
    }

    /// Step 3: stretches the password with the group's salt and policy; Q1 to every group realm.
    public mutating func q1Requests(password: String) throws(VaultError) -> [RealmID: VaultRequest] {
        let salt = VaultDerivation.salt(version: version, tenant: tenantBytes, user: userBytes)
        let h: SymmetricKey
        do { h = try VaultDerivation.stretch(password: password, salt: salt, policy: policy) } catch {
            throw .policy("scrypt failed: \(error)")
        }
        let b: BlindedInput
        do { b = try h.withUnsafeBytes { try VaultOPRF.blind(Array($0)) } } catch { throw .policy("blinding failed") }
        blinded = b
        var out = [RealmID: VaultRequest]()
        for (id, ticket) in tickets {
            out[id] = .q1(Q1Request(token: tokens[id]!, ticket: ticket, version: version, blindedElement: b.blindedElementBytes))
        }
        return out
    }

    /// What Q1 established.
    public enum Q1Outcome: Sendable, Equatable {
        /// `C` reproduced: send the Q2 requests, then call `receiveQ2`.
        case recovered
        /// At least `t` valid answers, none reproducing `C`.
        case wrongPassword(attemptsLeft: Int)
        /// Not enough valid answers: the error to report after Q2.
        case failed(VaultError)
    }

    /// Step 4: validates and interpolates. Always follow with `q2Requests()`.
    public mutating func receiveQ1(_ replies: [RealmID: RealmReply]) -> Q1Outcome {
        guard let blinded else { preconditionFailure("receiveQ1 before q1Requests") }
        let t = configuration.threshold
        var shares = [RealmID: Shamir.Share]()
        var attempts = [(RealmID, Int)]()
        var lockedClaims = [RealmID]()
        for (id, reply) in replies {
            guard let realm = realm(id) else { continue }
            switch reply {
            case .success(.q1(let a)):
                challenges[id] = a.challenge
                attempts.append((id, Int(a.attemptsLeft)))
                let message = VaultDerivation.recordMessage(version: version, realmID: id, x: realm.x, oprfPublicKey: a.oprfPublicKey,
                                                            maskedShare: a.maskedShare, policy: policy)
                guard VaultDerivation.verifyRecord(signature: a.signature, verificationKey: verificationKey, message: message) else {
                    faulty[id] = problem(id, "record signature invalid (altered share, key, x or policy)")
                    continue
                }
                let rwd: [UInt8]
                do {
                    rwd = try VaultOPRF.finalize(blinded, evaluatedElement: a.evaluatedElement, proof: a.proof, publicKey: a.oprfPublicKey)
                } catch {
                    faulty[id] = problem(id, "evaluation proof invalid (corrupted evaluation or another key)")
                    continue
                }
                shares[id] = Shamir.Share(x: realm.x, y: VaultDerivation.xor(a.maskedShare, VaultDerivation.mask(rwd: rwd, realmID: id)))
            case .success(.error(let e)):
                if e.code == .locked { lockedClaims.append(id); attempts.append((id, 0)) }
                down[id] = problem(id, "refused: \(e)")
            case .success: faulty[id] = problem(id, "answered with the wrong message type")
            case .failure(let f): down[id] = problem(id, f.description)
            }
        }
        let n = configuration.n
        let quorumLeft = Self.quorumAttemptsLeft(attempts.map(\.1), n: n, t: t)
        if quorumLeft > 0 {
            // Realms claiming no guesses are left while the quorum disagrees: named, not believed.
            unconfirmedLockClaims = configuration.realms.compactMap { r in
                if lockedClaims.contains(r.id) {
                    return problem(r.id, "says the key is destroyed, but fewer than \(n - t + 1) realms confirm it")
                }
                guard attempts.contains(where: { $0.0 == r.id && $0.1 <= 0 }) else { return nil }
                return problem(r.id, "says no guesses are left, but fewer than \(n - t + 1) realms confirm it")
            }
        }
        if shares.count >= t {
            let ids = configuration.realms.map(\.id).filter { shares[$0] != nil }
            for subset in combinations(ids, t) {
                guard let s = try? Shamir.combine(subset.map { shares[$0]! }) else { continue }
                if reproducesCommitment(s) {
                    secret = SymmetricKey(data: s)
                    // Name valid-looking shares that are off the polynomial.
                    for id in ids where !subset.contains(id) {
                        let probe = Array(subset.dropLast()) + [id]
                        if (try? Shamir.combine(probe.map { shares[$0]! })) != s {
                            faulty[id] = problem(id, "share inconsistent with the others")
                        }
                    }
                    return .recovered
                }
            }
            return .wrongPassword(attemptsLeft: quorumLeft)
        }
        if lockedClaims.count >= configuration.n - t + 1 { return .failed(.locked) }
        if !faulty.isEmpty { return .failed(.realmFault(faulty: ordered(faulty), down: ordered(down))) }
        return .failed(.realmsUnavailable(down: ordered(down), needed: t - shares.count))
    }

    private func reproducesCommitment(_ s: [UInt8]) -> Bool {
        let key = SymmetricKey(data: s)
        let vk = Array(VaultDerivation.recordSigningKey(secret: key).publicKey.rawRepresentation)
        let c = VaultDerivation.commitment(secret: key, version: version, policy: policy, n: configuration.n, t: configuration.threshold,
                                           verificationKey: vk, tenant: tenantBytes, user: userBytes)
        return constantTimeEqual(vk, verificationKey) && constantTimeEqual(c, commitment)
    }

    /// Step 5: Q2 to every realm that answered Q1 with a challenge: real proofs after success,
    /// random 32-byte values otherwise.
    public func q2Requests() -> [RealmID: VaultRequest] {
        var out = [RealmID: VaultRequest]()
        let u = secret.map { VaultDerivation.unlockKey(secret: $0) }
        for (id, challenge) in challenges {
            let proof: [UInt8]
            if let u {
                let tag = VaultDerivation.unlockTag(unlockKey: u, realmID: id, version: version)
                proof = VaultDerivation.unlockProof(tag: tag, realmID: id, version: version, challenge: challenge)
            } else {
                proof = Challenge.random().bytes
            }
            out[id] = .q2(Q2Request(token: tokens[id]!, version: version, challenge: challenge, unlockProof: proof))
        }
        return out
    }

    /// Step 6 (after `.recovered`): opens `W` from the Q2 answers.
    public mutating func receiveQ2(_ replies: [RealmID: RealmReply]) throws(VaultError) -> SymmetricKey {
        guard let secret else { preconditionFailure("receiveQ2 without a recovered secret") }
        for id in configuration.realms.map(\.id) {
            guard let reply = replies[id] else { continue }
            switch reply {
            case .success(.q2(let a)):
                if let k = VaultDerivation.unwrap(a.wrappedKey, secret: secret, version: version, tenant: tenantBytes, user: userBytes) {
                    return k
                }
                faulty[id] = problem(id, "wrapped key does not open")
            case .success(.error(let e)): down[id] = problem(id, "unlock refused: \(e)")
            case .success: faulty[id] = problem(id, "answered with the wrong message type")
            case .failure(let f): down[id] = problem(id, f.description)
            }
        }
        if !faulty.isEmpty { throw .realmFault(faulty: ordered(faulty), down: ordered(down)) }
        throw .realmsUnavailable(down: ordered(down), needed: 1)
    }

    /// Realms named faulty so far (reported even when recovery succeeded).
    public var faultyRealms: [RealmProblem] { ordered(faulty) }
    /// Realms that were down or refused.
    public var downRealms: [RealmProblem] { ordered(down) }
    var secretForTesting: SymmetricKey? { secret }

    /// After a recovery: the credential that proves the current password for this version.
    var replaceCredential: VaultReplaceCredential? { secret.map { VaultReplaceCredential(version: version, secret: $0) } }
}


/// All k-element subsets, in order.
func combinations<T>(_ items: [T], _ k: Int) -> [[T]] {
    guard k > 0 else { return [[]] }
    guard items.count >= k else { return [] }
    if items.count == k { return [items] }
    let head = items[0], tail = Array(items.dropFirst())
    return combinations(tail, k - 1).map { [head] + $0 } + combinations(tail, k)
}
