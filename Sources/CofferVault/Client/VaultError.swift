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

/// A vault operation failed in a way a person can act on: a ``Code``, a message, the realms it
/// concerns and the numbers that explain it. The same model as `BackupError` and `StorageError`.
/// Never contains a password, a key or a share.
public struct VaultError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What kind of failure this is: compare with `==` or switch with a `default:` (codes can be
    /// added in later versions without breaking callers; match on the code, never on the message).
    public struct Code: Sendable, Hashable, CaseIterable, CustomStringConvertible {
        private enum Base: String, Sendable, Hashable, CaseIterable {
            case wrongPassword, lockNotConfirmed, locked, notRegistered, realmsUnavailable, realmFault,
                 notEffective, token, policy, passwordTooShort, registrationExists
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The password is wrong; ``VaultError/attemptsLeft`` more tries before the key is destroyed
        /// (0: none are left, the key is destroyed).
        public static let wrongPassword = Code(.wrongPassword)
        /// The password is wrong; the quorum of realms reports ``VaultError/attemptsLeft`` more
        /// tries, while the realms in ``VaultError/realms`` claim the key is destroyed (or no guess
        /// is left) without `n - t + 1` realms confirming it: not believed, reported.
        public static let lockNotConfirmed = Code(.lockNotConfirmed)
        /// Too many wrong passwords: at least `n - t + 1` realms report the key destroyed for good.
        public static let locked = Code(.locked)
        /// This account has no key in the vault.
        public static let notRegistered = Code(.notRegistered)
        /// Too few realms answered (``VaultError/unreachable``); ``VaultError/needed`` more must be
        /// reachable. Nothing took effect.
        public static let realmsUnavailable = Code(.realmsUnavailable)
        /// Realms answered inconsistently or with invalid data (``VaultError/realms``); too few good
        /// answers remained.
        public static let realmFault = Code(.realmFault)
        /// A registration, delete or head write reached ``VaultError/acknowledged`` realms of the
        /// ``VaultError/needed`` (`n - t + 1`), so it did not take effect; ``VaultError/realms``
        /// says why each other realm did not acknowledge.
        public static let notEffective = Code(.notEffective)
        /// A token could not be obtained.
        public static let token = Code(.token)
        /// The password policy in the configuration or a record is outside the allowed bounds.
        public static let policy = Code(.policy)
        /// The new password is shorter than ``VaultError/minimumLength`` (`minPasswordLength` in
        /// vault.json, default 6 characters); refused before anything was sent.
        public static let passwordTooShort = Code(.passwordTooShort)
        /// The account already has an active registration at the realms in ``VaultError/realms``,
        /// and this registration may not replace it (no proof of the current password, no reset).
        /// Nothing was written when the client saw it in Q0; otherwise the realms refused.
        public static let registrationExists = Code(.registrationExists)

        public static var allCases: [Code] { Base.allCases.map(Code.init) }
        /// The code's name (`wrongPassword`), for logs and JSON.
        public var description: String { base.rawValue }
    }

    public var code: Code
    /// What happened and what to do, in words a user can act on.
    public var message: String
    /// The realms this error is about: those claiming an unconfirmed lock, the faulty ones, those
    /// holding an active registration, or those that did not acknowledge a write.
    public var realms: [RealmProblem]
    /// Realms that did not answer (``Code/realmsUnavailable``, ``Code/realmFault``).
    public var unreachable: [RealmProblem]
    /// Guesses left before the key is destroyed (``Code/wrongPassword``, ``Code/lockNotConfirmed``).
    public var attemptsLeft: Int?
    /// How many more realms must answer (``Code/realmsUnavailable``), or how many acknowledgements a
    /// write needed (``Code/notEffective``).
    public var needed: Int?
    /// How many realms acknowledged a write that did not take effect (``Code/notEffective``).
    public var acknowledged: Int?
    /// The minimum password length of the vault's policy (``Code/passwordTooShort``).
    public var minimumLength: Int?

    public init(_ code: Code, message: String, realms: [RealmProblem] = [], unreachable: [RealmProblem] = [],
                attemptsLeft: Int? = nil, needed: Int? = nil, acknowledged: Int? = nil, minimumLength: Int? = nil) {
        self.code = code
        self.message = message
        self.realms = realms
        self.unreachable = unreachable
        self.attemptsLeft = attemptsLeft
        self.needed = needed
        self.acknowledged = acknowledged
        self.minimumLength = minimumLength
    }

    public var description: String { message }

    // The errors the vault client throws, each with its message.

    public static func wrongPassword(attemptsLeft left: Int) -> VaultError {
        let message = left <= 0
            ? "wrong password; no guesses are left, the vault has destroyed the key"
            : "wrong password; \(left) more \(left == 1 ? "guess" : "guesses") before the vault destroys the key"
        return VaultError(.wrongPassword, message: message, attemptsLeft: left)
    }

    public static func lockNotConfirmed(attemptsLeft left: Int, claiming: [RealmProblem]) -> VaultError {
        VaultError(.lockNotConfirmed,
                   message: "wrong password; \(left) more \(left == 1 ? "guess" : "guesses") before the vault destroys the key. "
                       + "Not believed (too few realms confirm it): " + claiming.map(\.description).joined(separator: "; ")
                       + ". Report these realms to the vault operators.",
                   realms: claiming, attemptsLeft: left)
    }

    public static var locked: VaultError {
        VaultError(.locked, message: "the vault destroyed this key after too many wrong passwords; it cannot be recovered with a password any more (use the 64-digit key if you kept it)",
                   attemptsLeft: 0)
    }

    public static var notRegistered: VaultError {
        VaultError(.notRegistered, message: "this account has no key in the vault (never enabled, or disabled)")
    }

    public static func realmsUnavailable(down: [RealmProblem], needed: Int) -> VaultError {
        VaultError(.realmsUnavailable,
                   message: "not enough vault realms answered: \(needed) more needed. Unreachable: " + down.map(\.description).joined(separator: "; "),
                   unreachable: down, needed: needed)
    }

    public static func realmFault(faulty: [RealmProblem], down: [RealmProblem]) -> VaultError {
        var s = "vault realms answered inconsistently: " + faulty.map(\.description).joined(separator: "; ")
        if !down.isEmpty { s += ". Unreachable: " + down.map(\.description).joined(separator: "; ") }
        return VaultError(.realmFault, message: s + ". Report this to the vault operators.", realms: faulty, unreachable: down)
    }

    public static func notEffective(operation: String, acknowledged: Int, needed: Int, problems: [RealmProblem]) -> VaultError {
        VaultError(.notEffective,
                   message: "the \(operation) reached only \(acknowledged) realms of the \(needed) needed, so it did not take effect: the previous password still works. "
                       + problems.map(\.description).joined(separator: "; "),
                   realms: problems, needed: needed, acknowledged: acknowledged)
    }

    public static func token(_ detail: String) -> VaultError {
        VaultError(.token, message: "could not obtain a realm token: \(detail)")
    }

    public static func policy(_ detail: String) -> VaultError {
        VaultError(.policy, message: "refused password policy: \(detail)")
    }

    public static func passwordTooShort(minimum: Int) -> VaultError {
        VaultError(.passwordTooShort,
                   message: "the password is too short: the vault policy asks for at least \(minimum) characters (nothing was sent)",
                   minimumLength: minimum)
    }

    public static func registrationExists(realms: [RealmProblem]) -> VaultError {
        VaultError(.registrationExists,
                   message: "this account already has a key in the vault (\(realms.count) \(realms.count == 1 ? "realm holds" : "realms hold") an active registration); "
                       + "replacing it needs the current password (change the password instead) or an explicit reset, which the realms count. Nothing was replaced",
                   realms: realms)
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
