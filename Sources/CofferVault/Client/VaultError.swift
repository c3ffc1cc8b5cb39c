#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Why one realm did not contribute. Never contains secrets.
public struct RealmProblem: Sendable, Equatable, CustomStringConvertible {
    public var realmID: RealmID
    public var url: String
    public var reason: String
    public init(realmID: RealmID, url: String, reason: String) {
        self.realmID = realmID
        self.url = url
        self.reason = reason
    }
    public var description: String { "realm \(realmID) (\(url)): \(reason)" }
}

/// A vault operation failed in a way a person can act on.
public enum VaultError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The password is wrong; `attemptsLeft` more tries before the key is destroyed.
    case wrongPassword(attemptsLeft: Int)
    /// The password is wrong; the quorum of realms reports `attemptsLeft` more tries, while the
    /// named realms claim the key is destroyed (or no guess is left) without `n - t + 1` realms
    /// confirming it: not believed, reported.
    case lockNotConfirmed(attemptsLeft: Int, claiming: [RealmProblem])
    /// Too many wrong passwords: at least `n - t + 1` realms report the key destroyed for good.
    case locked
    /// This account has no key in the vault.
    case notRegistered
    /// Too few realms answered; `needed` more must be reachable.
    case realmsUnavailable(down: [RealmProblem], needed: Int)
    /// Realms answered inconsistently or with invalid data (named); too few good answers remained.
    case realmFault(faulty: [RealmProblem], down: [RealmProblem])
    /// A registration or delete reached fewer than `n - t + 1` realms, so it did not take effect.
    case notEffective(operation: String, acknowledged: Int, needed: Int, problems: [RealmProblem])
    /// A token could not be obtained.
    case token(String)
    /// The password policy in the configuration or a record is outside the allowed bounds.
    case policy(String)
    /// The new password is shorter than the vault policy's minimum (`minPasswordLength` in
    /// vault.json, default 6 characters); refused before anything was sent.
    case passwordTooShort(minimum: Int)
    /// The account already has an active registration at the named realms, and this registration
    /// may not replace it (no proof of the current password, no reset). Nothing was written when
    /// the client saw it in Q0; otherwise the realms refused (`replaceNotProven`).
    case registrationExists(realms: [RealmProblem])

    public var description: String {
        switch self {
        case .wrongPassword(let left):
            if left <= 0 { return "wrong password; no guesses are left, the vault has destroyed the key" }
            return "wrong password; \(left) more \(left == 1 ? "guess" : "guesses") before the vault destroys the key"
        case .lockNotConfirmed(let left, let claiming):
            return "wrong password; \(left) more \(left == 1 ? "guess" : "guesses") before the vault destroys the key. "
                + "Not believed (too few realms confirm it): " + claiming.map(\.description).joined(separator: "; ")
                + ". Report these realms to the vault operators."
        case .locked:
            return "the vault destroyed this key after too many wrong passwords; it cannot be recovered with a password any more (use the 64-digit key if you kept it)"
        case .notRegistered:
            return "this account has no key in the vault (never enabled, or disabled)"
        case .realmsUnavailable(let down, let needed):
            return "not enough vault realms answered: \(needed) more needed. Unreachable: " + down.map(\.description).joined(separator: "; ")
        case .realmFault(let faulty, let down):
            var s = "vault realms answered inconsistently: " + faulty.map(\.description).joined(separator: "; ")
            if !down.isEmpty { s += ". Unreachable: " + down.map(\.description).joined(separator: "; ") }
            return s + ". Report this to the vault operators."
        case .notEffective(let op, let ack, let needed, let problems):
            return "the \(op) reached only \(ack) realms of the \(needed) needed, so it did not take effect: the previous password still works. " +
                problems.map(\.description).joined(separator: "; ")
        case .token(let m): return "could not obtain a realm token: \(m)"
        case .policy(let m): return "refused password policy: \(m)"
        case .passwordTooShort(let minimum):
            return "the password is too short: the vault policy asks for at least \(minimum) characters (nothing was sent)"
        case .registrationExists(let realms):
            return "this account already has a key in the vault (\(realms.count) \(realms.count == 1 ? "realm holds" : "realms hold") an active registration); "
                + "replacing it needs the current password (change the password instead) or an explicit reset, which the realms count. Nothing was replaced"
        }
    }
}

/// One realm's call failed at the transport level: unreachable, timeout, non-200, or an answer
/// that did not open or decode. Never read as *locked* or *not registered*.
public enum RealmCallFailure: Error, Sendable, Equatable, CustomStringConvertible {
    case unreachable(String)
    case timeout
    case httpStatus(Int)
    case unsealed
    case malformed(String)
    case token(String)

    public var description: String {
        switch self {
        case .unreachable(let m): return "unreachable (\(m))"
        case .timeout: return "timed out"
        case .httpStatus(let s): return "HTTP status \(s)"
        case .unsealed: return "answer not sealed for this request (forged or corrupted)"
        case .malformed(let m): return "malformed answer (\(m))"
        case .token(let m): return "no token (\(m))"
        }
    }
}

/// One realm's reply: a decoded answer (success or sealed error) or a transport failure.
public typealias RealmReply = Result<VaultAnswer, RealmCallFailure>
