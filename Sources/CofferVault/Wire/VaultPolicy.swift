#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The password-stretching and guess policy of a registration. It travels inside the signed record
/// (`sig_i`) and the commitment `C`, so a realm cannot weaken it unnoticed.
///
/// Encoding (5 bytes): `0x01 (scrypt) ‖ log2(N) ‖ r ‖ p ‖ guessLimit`.
public struct VaultPolicy: Hashable, Sendable, CustomStringConvertible {
    public static let byteCount = 5
    /// KDF identifier for scrypt.
    public static let scryptID: UInt8 = 0x01

    /// Client-side bounds: anything outside is refused before any password work.
    public static let log2NRange: ClosedRange<UInt8> = 15...20
    public static let allowedR: UInt8 = 8
    public static let pRange: ClosedRange<UInt8> = 1...4
    public static let guessLimitRange: ClosedRange<UInt8> = 1...100

    /// N = 2^16, r = 8, p = 1, 10 guesses.
    public static let `default` = VaultPolicy(uncheckedLog2N: 16, r: 8, p: 1, guessLimit: 10)

    public let log2N: UInt8
    public let r: UInt8
    public let p: UInt8
    /// `L`: wrong guesses after which every realm destroys the record.
    public let guessLimit: UInt8

    init(uncheckedLog2N: UInt8, r: UInt8, p: UInt8, guessLimit: UInt8) {
        self.log2N = uncheckedLog2N
        self.r = r
        self.p = p
        self.guessLimit = guessLimit
    }

    /// A policy within the bounds (N 2^15...2^20, r = 8, p 1...4, L 1...100).
    public init(log2N: UInt8, r: UInt8 = 8, p: UInt8 = 1, guessLimit: UInt8 = 10) throws(WireError) {
        guard Self.log2NRange.contains(log2N) else { throw .invalidValue(field: "policy scrypt N") }
        guard r == Self.allowedR else { throw .invalidValue(field: "policy scrypt r") }
        guard Self.pRange.contains(p) else { throw .invalidValue(field: "policy scrypt p") }
        guard Self.guessLimitRange.contains(guessLimit) else { throw .invalidValue(field: "policy guess limit") }
        self.init(uncheckedLog2N: log2N, r: r, p: p, guessLimit: guessLimit)
    }

    /// scrypt's N.
    public var n: Int { 1 << Int(log2N) }

    public var bytes: [UInt8] { [Self.scryptID, log2N, r, p, guessLimit] }

    /// Strict: unknown KDF id or out-of-bounds parameters are rejected.
    public init<C: Collection>(bytes: C) throws(WireError) where C.Element == UInt8 {
        let b = Array(bytes)
        guard b.count == Self.byteCount else { throw .invalidValue(field: "policy length") }
        guard b[0] == Self.scryptID else { throw .invalidValue(field: "policy KDF") }
        try self.init(log2N: b[1], r: b[2], p: b[3], guessLimit: b[4])
    }

    static func read(_ r: inout WireReader) throws(WireError) -> VaultPolicy {
        try VaultPolicy(bytes: try r.fixed(byteCount, "policy"))
    }

    public var description: String { "scrypt(N=2^\(log2N), r=\(r), p=\(p)), \(guessLimit) guesses" }
}

/// What a realm token allows (`scope` claim).
public enum VaultScope: String, Sendable, Codable, CaseIterable {
    /// Q0 only: read the record's public state. Spends nothing.
    case status
    /// Q0, Q1, Q2: recovery. Q1 spends a guess.
    case recover
    /// Q0, R1, R2: (re-)registration.
    case register
    /// Q0, delete.
    case delete
    /// Head read and head write: the anchored backup heads (never the key record).
    case head
    /// Q0, R1, R2 like `register`, and R2 may replace an active record without proof of the
    /// current password (a forgotten password). Each such replacement is counted by the realm
    /// (in the record and in `coffer_realm_resets_total`).
    case reset

    /// The longest lifetime a token of this scope may have (`exp - iat`).
    public var maxLifetimeSeconds: Int {
        switch self {
        case .status, .recover: return 24 * 3600
        case .register, .reset, .delete, .head: return 10 * 60
        }
    }

    /// Which request types this scope admits.
    public func allows(_ type: VaultMessageType) -> Bool {
        switch (self, type) {
        case (_, .q0): return true
        case (.recover, .q1), (.recover, .q2): return true
        case (.register, .r1), (.register, .r2): return true
        case (.reset, .r1), (.reset, .r2): return true
        case (.delete, .delete): return true
        case (.head, .headRead), (.head, .headWrite): return true
        default: return false
        }
    }
}
