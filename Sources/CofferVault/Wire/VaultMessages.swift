#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The request types. The raw value is the body's leading type byte and the HPKE `aad`; each type
/// has its own URL path, so the realm knows the `aad` before opening.
public enum VaultMessageType: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    /// Q0: the record's public state and a fresh ticket. Costs no guess.
    case q0 = 0x01
    /// R1: registration, step 1: blinded element in, fresh pending VOPRF key's evaluation out.
    case r1 = 0x02
    /// R2: registration, step 2: commit the pending registration (compare-and-swap on the version).
    case r2 = 0x03
    /// Q1: a guess: ticket + blinded element in, evaluation + record + challenge out. Spends a guess.
    case q1 = 0x04
    /// Q2: unlock proof in, wrapped key `W` out on success.
    case q2 = 0x05
    /// Delete the registration (ticket + expectedVersion).
    case delete = 0x06
    /// Read the user's anchored backup heads (sealed under a key from `K`) and get a write ticket.
    case headRead = 0x07
    /// Store one anchored backup head (ticket from a head read; the seq never goes down).
    case headWrite = 0x08

    /// The POST path at the realm's base URL.
    public var path: String {
        switch self {
        case .q0: return "/v1/q0"
        case .r1: return "/v1/r1"
        case .r2: return "/v1/r2"
        case .q1: return "/v1/q1"
        case .q2: return "/v1/q2"
        case .delete: return "/v1/delete"
        case .headRead: return "/v1/head-read"
        case .headWrite: return "/v1/head-write"
        }
    }

    /// The type byte of this request's success answer.
    public var answerType: UInt8 { rawValue | 0x80 }

    /// Every request body (plaintext, before HPKE) is zero-padded to exactly this size.
    public var requestPaddedSize: Int { 4096 }

    /// Every answer to this request type (success or error; plaintext, before sealing) is
    /// zero-padded to exactly this size.
    public var answerPaddedSize: Int {
        // A head read lists up to `HeadWire.maxSlots` sealed heads; every other answer fits in 512.
        self == .headRead ? HeadWire.readAnswerPaddedSize : 512
    }

    public var description: String {
        switch self {
        case .q0: return "Q0"
        case .r1: return "R1"
        case .r2: return "R2"
        case .q1: return "Q1"
        case .q2: return "Q2"
        case .delete: return "delete"
        case .headRead: return "head-read"
        case .headWrite: return "head-write"
        }
    }

    /// The request type served at `path`, if any.
    public init?(path: String) {
        guard let t = Self.allCases.first(where: { $0.path == path }) else { return nil }
        self = t
    }
}

// MARK: - Requests

/// Q0 `{token}`.
public struct Q0Request: Sendable, Equatable {
    public var token: String
    public init(token: String) { self.token = token }
}

/// R1 `{token, blinded}`.
public struct R1Request: Sendable, Equatable {
    public var token: String
    /// Blinded element (49 bytes).
    public var blindedElement: [UInt8]
    public init(token: String, blindedElement: [UInt8]) {
        self.token = token
        self.blindedElement = blindedElement
    }
}

/// R2 `{token, pendingID, expectedVersion, version, c_i, C, vk, sig_i, tag_i, W, policy, replaceProof}`.
public struct R2Request: Sendable, Equatable {
    public var token: String
    public var pendingID: PendingID
    /// The version the client saw in Q0 (zero = none). The realm refuses if its current differs.
    public var expectedVersion: RecordVersion
    /// The new version (never zero).
    public var version: RecordVersion
    public var maskedShare: [UInt8]
    public var commitment: [UInt8]
    public var verificationKey: [UInt8]
    public var signature: [UInt8]
    public var unlockTag: [UInt8]
    public var wrappedKey: [UInt8]
    public var policy: VaultPolicy
    /// Proof of the current password when this replaces an active record:
    /// `HMAC(tag_cur, "coffer-vault/v1/replace-proof" ‖ realmID ‖ expectedVersion ‖ version ‖ pendingID)`
    /// keyed by the replaced record's stored unlock tag (``VaultDerivation/replaceProof``).
    /// All zero: none (a registration over no record or a tombstone, or a `reset`-scoped token).
    public var replaceProof: [UInt8]
    public init(token: String, pendingID: PendingID, expectedVersion: RecordVersion, version: RecordVersion,
                maskedShare: [UInt8], commitment: [UInt8], verificationKey: [UInt8], signature: [UInt8],
                unlockTag: [UInt8], wrappedKey: [UInt8], policy: VaultPolicy,
                replaceProof: [UInt8] = [UInt8](repeating: 0, count: WireSize.replaceProof)) {
        self.token = token
        self.pendingID = pendingID
        self.expectedVersion = expectedVersion
        self.version = version
        self.maskedShare = maskedShare
        self.commitment = commitment
        self.verificationKey = verificationKey
        self.signature = signature
        self.unlockTag = unlockTag
        self.wrappedKey = wrappedKey
        self.policy = policy
        self.replaceProof = replaceProof
    }

    /// True when the request carries a replace proof (not all zero).
    public var hasReplaceProof: Bool { replaceProof.contains { $0 != 0 } }
}

/// Q1 `{token, ticket, version, blinded}`.
public struct Q1Request: Sendable, Equatable {
    public var token: String
    public var ticket: Ticket
    public var version: RecordVersion
    public var blindedElement: [UInt8]
    public init(token: String, ticket: Ticket, version: RecordVersion, blindedElement: [UInt8]) {
        self.token = token
        self.ticket = ticket
        self.version = version
        self.blindedElement = blindedElement
    }
}

/// Q2 `{token, version, challenge, proof}`.
public struct Q2Request: Sendable, Equatable {
    public var token: String
    public var version: RecordVersion
    /// The challenge from this realm's Q1 answer (identifies it; single use).
    public var challenge: Challenge
    /// `HMAC(tag_i, "coffer-vault/v1/unlock-proof" ‖ realmID ‖ version ‖ challenge)`, or 32 random bytes.
    public var unlockProof: [UInt8]
    public init(token: String, version: RecordVersion, challenge: Challenge, unlockProof: [UInt8]) {
        self.token = token
        self.version = version
        self.challenge = challenge
        self.unlockProof = unlockProof
    }
}

/// Delete `{token, ticket, expectedVersion}`.
public struct DeleteRequest: Sendable, Equatable {
    public var token: String
    public var ticket: Ticket
    public var expectedVersion: RecordVersion
    public init(token: String, ticket: Ticket, expectedVersion: RecordVersion) {
        self.token = token
        self.ticket = ticket
        self.expectedVersion = expectedVersion
    }
}

/// Any request body.
public enum VaultRequest: Sendable, Equatable {
    case q0(Q0Request)
    case r1(R1Request)
    case r2(R2Request)
    case q1(Q1Request)
    case q2(Q2Request)
    case delete(DeleteRequest)
    case headRead(HeadReadRequest)
    case headWrite(HeadWriteRequest)

    public var type: VaultMessageType {
        switch self {
        case .q0: return .q0
        case .r1: return .r1
        case .r2: return .r2
        case .q1: return .q1
        case .q2: return .q2
        case .delete: return .delete
        case .headRead: return .headRead
        case .headWrite: return .headWrite
        }
    }

    /// The token the request carries (the realm verifies it before anything else).
    public var token: String {
        switch self {
        case .q0(let m): return m.token
        case .r1(let m): return m.token
        case .r2(let m): return m.token
        case .q1(let m): return m.token
        case .q2(let m): return m.token
        case .delete(let m): return m.token
        case .headRead(let m): return m.token
        case .headWrite(let m): return m.token
        }
    }

    /// Canonical encoding, zero-padded to `type.requestPaddedSize`.
    public func encode() throws(WireError) -> [UInt8] {
        var w = WireWriter()
        w.u8(type.rawValue)
        let token = Array(self.token.utf8)
        guard token.count <= WireSize.maxToken else { throw .oversize(field: "token", length: token.count) }
        try w.lp(token, field: "token")
        switch self {
        case .q0: break
        case .r1(let m):
            try check(m.blindedElement, WireSize.element, "blinded element")
            w.raw(m.blindedElement)
        case .r2(let m):
            guard !m.version.isZero else { throw .invalidValue(field: "version") }
            try check(m.maskedShare, WireSize.maskedShare, "masked share")
            try check(m.commitment, WireSize.commitment, "commitment")
            try check(m.verificationKey, WireSize.verificationKey, "verification key")
            try check(m.signature, WireSize.signature, "signature")
            try check(m.unlockTag, WireSize.unlockTag, "unlock tag")
            try check(m.wrappedKey, WireSize.wrappedKey, "wrapped key")
            try check(m.replaceProof, WireSize.replaceProof, "replace proof")
            w.raw(m.pendingID.bytes)
            w.raw(m.expectedVersion.bytes)
            w.raw(m.version.bytes)
            w.raw(m.maskedShare)
            w.raw(m.commitment)
            w.raw(m.verificationKey)
            w.raw(m.signature)
            w.raw(m.unlockTag)
            w.raw(m.wrappedKey)
            w.raw(m.policy.bytes)
            w.raw(m.replaceProof)
        case .q1(let m):
            try check(m.blindedElement, WireSize.element, "blinded element")
            w.raw(m.ticket.bytes)
            w.raw(m.version.bytes)
            w.raw(m.blindedElement)
        case .q2(let m):
            try check(m.unlockProof, WireSize.unlockProof, "unlock proof")
            w.raw(m.version.bytes)
            w.raw(m.challenge.bytes)
            w.raw(m.unlockProof)
        case .delete(let m):
            w.raw(m.ticket.bytes)
            w.raw(m.expectedVersion.bytes)
        case .headRead: break
        case .headWrite(let m):
            try m.encodeFields(into: &w)
        }
        return try pad(w.bytes, to: type.requestPaddedSize)
    }

    /// Strict decoding of a padded request body of the given type (the type the URL path names).
    public static func decode<C: Collection>(_ bytes: C, type: VaultMessageType) throws(WireError) -> VaultRequest where C.Element == UInt8 {
        guard bytes.count == type.requestPaddedSize else {
            throw .wrongPaddedSize(expected: type.requestPaddedSize, found: bytes.count)
        }
        var r = WireReader(bytes)
        let t = try r.byte("type")
        guard t == type.rawValue else { throw .unexpectedType(expected: type.rawValue, found: t) }
        let tokenBytes = try r.lp("token", max: WireSize.maxToken)
        guard let token = String(validating: tokenBytes, as: UTF8.self) else { throw .invalidValue(field: "token") }
        let request: VaultRequest
        switch type {
        case .q0:
            request = .q0(Q0Request(token: token))
        case .r1:
            request = .r1(R1Request(token: token, blindedElement: try r.fixed(WireSize.element, "blinded element")))
        case .r2:
            let pendingID = try PendingID.read(&r, "pending id")
            let expected = try RecordVersion.read(&r, "expected version")
            let version = try RecordVersion.read(&r, "version")
            guard !version.isZero else { throw .invalidValue(field: "version") }
            request = .r2(R2Request(
                token: token, pendingID: pendingID, expectedVersion: expected, version: version,
                maskedShare: try r.fixed(WireSize.maskedShare, "masked share"),
                commitment: try r.fixed(WireSize.commitment, "commitment"),
                verificationKey: try r.fixed(WireSize.verificationKey, "verification key"),
                signature: try r.fixed(WireSize.signature, "signature"),
                unlockTag: try r.fixed(WireSize.unlockTag, "unlock tag"),
                wrappedKey: try r.fixed(WireSize.wrappedKey, "wrapped key"),
                policy: try VaultPolicy.read(&r),
                replaceProof: try r.fixed(WireSize.replaceProof, "replace proof")))
        case .q1:
            let ticket = try Ticket.read(&r, "ticket")
            let version = try RecordVersion.read(&r, "version")
            request = .q1(Q1Request(token: token, ticket: ticket, version: version,
                                    blindedElement: try r.fixed(WireSize.element, "blinded element")))
        case .q2:
            let version = try RecordVersion.read(&r, "version")
            let challenge = try Challenge.read(&r, "challenge")
            request = .q2(Q2Request(token: token, version: version, challenge: challenge,
                                    unlockProof: try r.fixed(WireSize.unlockProof, "unlock proof")))
        case .delete:
            let ticket = try Ticket.read(&r, "ticket")
            request = .delete(DeleteRequest(token: token, ticket: ticket,
                                            expectedVersion: try RecordVersion.read(&r, "expected version")))
        case .headRead:
            request = .headRead(HeadReadRequest(token: token))
        case .headWrite:
            request = .headWrite(try HeadWriteRequest.decodeFields(token: token, &r))
        }
        try r.finishPadding()
        return request
    }
}

// MARK: - Answers

/// The state of a user's record at a realm, as Q0 reports it.
public enum RecordState: UInt8, Sendable, Equatable {
    /// No registration (never registered, or deleted).
    case none = 0
    /// A registration is active; Q1 may be tried.
    case active = 1
    /// The record was destroyed after `L` wrong guesses (a tombstone keeps its version).
    case locked = 2
}

/// Q0's answer: `{state, version, policy, C, vk, attemptsLeft, ticket}`.
/// For `.none`, every field but the ticket is zero; for `.locked`, only version and ticket are set.
public struct Q0Answer: Sendable, Equatable {
    public var state: RecordState
    public var version: RecordVersion
    public var policy: VaultPolicy?
    public var commitment: [UInt8]
    public var verificationKey: [UInt8]
    public var attemptsLeft: UInt8
    public var ticket: Ticket

    public init(state: RecordState, version: RecordVersion, policy: VaultPolicy?, commitment: [UInt8],
                verificationKey: [UInt8], attemptsLeft: UInt8, ticket: Ticket) {
        self.state = state
        self.version = version
        self.policy = policy
        self.commitment = commitment
        self.verificationKey = verificationKey
        self.attemptsLeft = attemptsLeft
        self.ticket = ticket
    }

    /// An answer for a user without a record.
    public static func notRegistered(ticket: Ticket) -> Q0Answer {
        Q0Answer(state: .none, version: .zero, policy: nil, commitment: zeros(WireSize.commitment),
                 verificationKey: zeros(WireSize.verificationKey), attemptsLeft: 0, ticket: ticket)
    }

    /// An answer for a destroyed record.
    public static func locked(version: RecordVersion, ticket: Ticket) -> Q0Answer {
        Q0Answer(state: .locked, version: version, policy: nil, commitment: zeros(WireSize.commitment),
                 verificationKey: zeros(WireSize.verificationKey), attemptsLeft: 0, ticket: ticket)
    }
}

/// R1's answer: `{pendingID, evaluatedElement, proof, pk_i}`.
public struct R1Answer: Sendable, Equatable {
    public var pendingID: PendingID
    public var evaluatedElement: [UInt8]
    public var proof: [UInt8]
    /// The fresh VOPRF public key `pk_i` (49-byte compressed P-384 point).
    public var oprfPublicKey: [UInt8]
    public init(pendingID: PendingID, evaluatedElement: [UInt8], proof: [UInt8], oprfPublicKey: [UInt8]) {
        self.pendingID = pendingID
        self.evaluatedElement = evaluatedElement
        self.proof = proof
        self.oprfPublicKey = oprfPublicKey
    }
}

/// R2's answer: the version now stored.
public struct R2Answer: Sendable, Equatable {
    public var version: RecordVersion
    public init(version: RecordVersion) { self.version = version }
}

/// Q1's answer: `{evaluatedElement, proof, pk_i, c_i, sig_i, challenge, attemptsLeft}`.
public struct Q1Answer: Sendable, Equatable {
    public var evaluatedElement: [UInt8]
    public var proof: [UInt8]
    public var oprfPublicKey: [UInt8]
    public var maskedShare: [UInt8]
    public var signature: [UInt8]
    public var challenge: Challenge
    /// Guesses left after this one.
    public var attemptsLeft: UInt8
    public init(evaluatedElement: [UInt8], proof: [UInt8], oprfPublicKey: [UInt8], maskedShare: [UInt8],
                signature: [UInt8], challenge: Challenge, attemptsLeft: UInt8) {
        self.evaluatedElement = evaluatedElement
        self.proof = proof
        self.oprfPublicKey = oprfPublicKey
        self.maskedShare = maskedShare
        self.signature = signature
        self.challenge = challenge
        self.attemptsLeft = attemptsLeft
    }
}

/// Q2's answer on success: `W`.
public struct Q2Answer: Sendable, Equatable {
    public var wrappedKey: [UInt8]
    public init(wrappedKey: [UInt8]) { self.wrappedKey = wrappedKey }
}

/// Delete's answer: the version that was deleted.
public struct DeleteAnswer: Sendable, Equatable {
    public var deletedVersion: RecordVersion
    public init(deletedVersion: RecordVersion) { self.deletedVersion = deletedVersion }
}

/// Why a realm refused a request. Sent sealed like any answer.
public enum RealmErrorCode: UInt8, Sendable, Equatable, CustomStringConvertible {
    /// The body decrypted but did not decode.
    case malformed = 0x01
    /// Unknown message type or protocol version.
    case unsupported = 0x02
    /// Token invalid, expired, for another realm, from an unknown tenant or with a bad signature.
    case badToken = 0x03
    /// Token valid but its scope does not admit this request.
    case scopeNotAllowed = 0x04
    /// No registration for this user.
    case notRegistered = 0x05
    /// The record was destroyed after too many wrong guesses.
    case locked = 0x06
    /// The record's version is not the one the request names (`currentVersion` says which it is).
    case versionMismatch = 0x07
    /// Ticket unknown, expired, spent, or issued to another user.
    case badTicket = 0x08
    /// Pending registration unknown or expired.
    case badPending = 0x09
    /// Challenge unknown, expired or spent.
    case badChallenge = 0x0A
    /// The unlock proof did not verify (`attemptsLeft` says how many guesses remain).
    case unlockFailed = 0x0B
    /// Too many pending registrations for this user; retry later.
    case tooManyPending = 0x0C
    /// The realm does not accept this policy (e.g. a guess limit above its maximum).
    case policyRefused = 0x0D
    /// Rate limited; retry later.
    case busy = 0x0E
    /// The realm failed internally; nothing changed.
    case internalError = 0x0F
    /// Head write: the realm holds this slot at a higher seq (or the same seq with other bytes).
    case staleHead = 0x10
    /// Head write: the user already has the most slots a realm keeps (`HeadWire.maxSlots`).
    case tooManyHeads = 0x11
    /// Head write: the slot exists and the write authenticator does not match the one it was created with.
    case headAuthFailed = 0x12
    /// R2 over an active record without a valid replace proof (the current password) and without a
    /// `reset`-scoped token; nothing changed.
    case replaceNotProven = 0x13

    public var description: String {
        switch self {
        case .malformed: return "malformed request"
        case .unsupported: return "unsupported request"
        case .badToken: return "token rejected"
        case .scopeNotAllowed: return "token scope does not allow this request"
        case .notRegistered: return "not registered"
        case .locked: return "locked after too many wrong passwords"
        case .versionMismatch: return "registration version changed"
        case .badTicket: return "ticket rejected"
        case .badPending: return "pending registration unknown or expired"
        case .badChallenge: return "challenge rejected"
        case .unlockFailed: return "unlock proof rejected"
        case .tooManyPending: return "too many pending registrations"
        case .policyRefused: return "policy refused"
        case .busy: return "busy"
        case .internalError: return "internal error"
        case .staleHead: return "a newer head is stored for this slot"
        case .tooManyHeads: return "too many head slots for this account"
        case .headAuthFailed: return "head write not authorised for this slot"
        case .replaceNotProven: return "an active registration exists; replacing it needs the current password or a reset"
        }
    }
}

/// A sealed error answer: `0xEE ‖ code ‖ currentVersion(16) ‖ attemptsLeft`.
public struct RealmErrorAnswer: Sendable, Equatable, CustomStringConvertible {
    public static let typeByte: UInt8 = 0xEE
    public var code: RealmErrorCode
    /// For `.versionMismatch` and `.locked`: the realm's current version (zero when not applicable
    /// or the token was not verified).
    public var currentVersion: RecordVersion
    /// For `.unlockFailed`: guesses left (0 otherwise).
    public var attemptsLeft: UInt8
    public init(code: RealmErrorCode, currentVersion: RecordVersion = .zero, attemptsLeft: UInt8 = 0) {
        self.code = code
        self.currentVersion = currentVersion
        self.attemptsLeft = attemptsLeft
    }
    public var description: String { code.description }
}

/// Any answer body.
public enum VaultAnswer: Sendable, Equatable {
    case q0(Q0Answer)
    case r1(R1Answer)
    case r2(R2Answer)
    case q1(Q1Answer)
    case q2(Q2Answer)
    case delete(DeleteAnswer)
    case headRead(HeadReadAnswer)
    case headWrite(HeadWriteAnswer)
    case error(RealmErrorAnswer)

    /// Canonical encoding, zero-padded to `requestType.answerPaddedSize`. A success answer must
    /// match `requestType`; an error fits any.
    public func encode(for requestType: VaultMessageType) throws(WireError) -> [UInt8] {
        var w = WireWriter()
        switch self {
        case .q0(let a):
            try expect(requestType, .q0)
            w.u8(VaultMessageType.q0.answerType)
            w.u8(a.state.rawValue)
            w.raw(a.version.bytes)
            switch a.state {
            case .active:
                guard let policy = a.policy else { throw .invalidValue(field: "policy") }
                try check(a.commitment, WireSize.commitment, "commitment")
                try check(a.verificationKey, WireSize.verificationKey, "verification key")
                w.raw(policy.bytes)
                w.raw(a.commitment)
                w.raw(a.verificationKey)
                w.u8(a.attemptsLeft)
            case .none, .locked:
                w.raw(zeros(VaultPolicy.byteCount + WireSize.commitment + WireSize.verificationKey + 1))
            }
            w.raw(a.ticket.bytes)
        case .r1(let a):
            try expect(requestType, .r1)
            try check(a.evaluatedElement, WireSize.element, "evaluated element")
            try check(a.proof, WireSize.proof, "proof")
            try check(a.oprfPublicKey, WireSize.element, "OPRF public key")
            w.u8(VaultMessageType.r1.answerType)
            w.raw(a.pendingID.bytes)
            w.raw(a.evaluatedElement)
            w.raw(a.proof)
            w.raw(a.oprfPublicKey)
        case .r2(let a):
            try expect(requestType, .r2)
            w.u8(VaultMessageType.r2.answerType)
            w.raw(a.version.bytes)
        case .q1(let a):
            try expect(requestType, .q1)
            try check(a.evaluatedElement, WireSize.element, "evaluated element")
            try check(a.proof, WireSize.proof, "proof")
            try check(a.oprfPublicKey, WireSize.element, "OPRF public key")
            try check(a.maskedShare, WireSize.maskedShare, "masked share")
            try check(a.signature, WireSize.signature, "signature")
            w.u8(VaultMessageType.q1.answerType)
            w.raw(a.evaluatedElement)
            w.raw(a.proof)
            w.raw(a.oprfPublicKey)
            w.raw(a.maskedShare)
            w.raw(a.signature)
            w.raw(a.challenge.bytes)
            w.u8(a.attemptsLeft)
        case .q2(let a):
            try expect(requestType, .q2)
            try check(a.wrappedKey, WireSize.wrappedKey, "wrapped key")
            w.u8(VaultMessageType.q2.answerType)
            w.raw(a.wrappedKey)
        case .delete(let a):
            try expect(requestType, .delete)
            w.u8(VaultMessageType.delete.answerType)
            w.raw(a.deletedVersion.bytes)
        case .headRead(let a):
            try expect(requestType, .headRead)
            w.u8(VaultMessageType.headRead.answerType)
            try a.encodeFields(into: &w)
        case .headWrite(let a):
            try expect(requestType, .headWrite)
            w.u8(VaultMessageType.headWrite.answerType)
            w.u64(a.seq)
        case .error(let e):
            w.u8(RealmErrorAnswer.typeByte)
            w.u8(e.code.rawValue)
            w.raw(e.currentVersion.bytes)
            w.u8(e.attemptsLeft)
        }
        return try pad(w.bytes, to: requestType.answerPaddedSize)
    }

    /// Strict decoding of a padded answer to a request of type `requestType`.
    public static func decode<C: Collection>(_ bytes: C, for requestType: VaultMessageType) throws(WireError) -> VaultAnswer where C.Element == UInt8 {
        guard bytes.count == requestType.answerPaddedSize else {
            throw .wrongPaddedSize(expected: requestType.answerPaddedSize, found: bytes.count)
        }
        var r = WireReader(bytes)
        let t = try r.byte("type")
        let answer: VaultAnswer
        if t == RealmErrorAnswer.typeByte {
            guard let code = RealmErrorCode(rawValue: try r.byte("error code")) else { throw .invalidValue(field: "error code") }
            let version = try RecordVersion.read(&r, "current version")
            answer = .error(RealmErrorAnswer(code: code, currentVersion: version, attemptsLeft: try r.byte("attempts left")))
        } else {
            guard t == requestType.answerType else { throw .unexpectedType(expected: requestType.answerType, found: t) }
            switch requestType {
            case .q0:
                guard let state = RecordState(rawValue: try r.byte("state")) else { throw .invalidValue(field: "state") }
                let version = try RecordVersion.read(&r, "version")
                let policyBytes = try r.fixed(VaultPolicy.byteCount, "policy")
                let commitment = try r.fixed(WireSize.commitment, "commitment")
                let vk = try r.fixed(WireSize.verificationKey, "verification key")
                let attemptsLeft = try r.byte("attempts left")
                let ticket = try Ticket.read(&r, "ticket")
                var policy: VaultPolicy? = nil
                switch state {
                case .active:
                    guard !version.isZero else { throw .invalidValue(field: "version") }
                    policy = try VaultPolicy(bytes: policyBytes)
                case .none:
                    guard version.isZero else { throw .invalidValue(field: "version") }
                    fallthrough
                case .locked:
                    guard (policyBytes + commitment + vk + [attemptsLeft]).allSatisfy({ $0 == 0 }) else {
                        throw .invalidValue(field: "fields of a record without registration")
                    }
                }
                answer = .q0(Q0Answer(state: state, version: version, policy: policy, commitment: commitment,
                                      verificationKey: vk, attemptsLeft: attemptsLeft, ticket: ticket))
            case .r1:
                answer = .r1(R1Answer(pendingID: try PendingID.read(&r, "pending id"),
                                      evaluatedElement: try r.fixed(WireSize.element, "evaluated element"),
                                      proof: try r.fixed(WireSize.proof, "proof"),
                                      oprfPublicKey: try r.fixed(WireSize.element, "OPRF public key")))
            case .r2:
                answer = .r2(R2Answer(version: try RecordVersion.read(&r, "version")))
            case .q1:
                answer = .q1(Q1Answer(evaluatedElement: try r.fixed(WireSize.element, "evaluated element"),
                                      proof: try r.fixed(WireSize.proof, "proof"),
                                      oprfPublicKey: try r.fixed(WireSize.element, "OPRF public key"),
                                      maskedShare: try r.fixed(WireSize.maskedShare, "masked share"),
                                      signature: try r.fixed(WireSize.signature, "signature"),
                                      challenge: try Challenge.read(&r, "challenge"),
                                      attemptsLeft: try r.byte("attempts left")))
            case .q2:
                answer = .q2(Q2Answer(wrappedKey: try r.fixed(WireSize.wrappedKey, "wrapped key")))
            case .delete:
                answer = .delete(DeleteAnswer(deletedVersion: try RecordVersion.read(&r, "deleted version")))
            case .headRead:
                answer = .headRead(try HeadReadAnswer.decodeFields(&r))
            case .headWrite:
                answer = .headWrite(HeadWriteAnswer(seq: try r.uint64("seq")))
            }
        }
        try r.finishPadding()
        return answer
    }
}

// MARK: - Helpers

@inline(__always)
func zeros(_ n: Int) -> [UInt8] { [UInt8](repeating: 0, count: n) }

private func check(_ field: [UInt8], _ count: Int, _ name: String) throws(WireError) {
    guard field.count == count else { throw .invalidValue(field: "\(name) length") }
}

private func expect(_ got: VaultMessageType, _ want: VaultMessageType) throws(WireError) {
    guard got == want else { throw .unexpectedType(expected: got.answerType, found: want.answerType) }
}

private func pad(_ bytes: [UInt8], to size: Int) throws(WireError) -> [UInt8] {
    guard bytes.count <= size else { throw .oversize(field: "message", length: bytes.count) }
    return bytes + zeros(size - bytes.count)
}
