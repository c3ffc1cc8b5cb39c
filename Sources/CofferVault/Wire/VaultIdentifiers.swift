#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Crypto
import CofferCore

/// A fixed-length byte string on the wire (ids, versions, tickets, ...).
public protocol FixedBytes: Hashable, Sendable, CustomStringConvertible {
    static var byteCount: Int { get }
    var bytes: [UInt8] { get }
    init(uncheckedBytes: [UInt8])
}

extension FixedBytes {
    /// From exactly `byteCount` bytes.
    public init<C: Collection>(bytes: C) throws(WireError) where C.Element == UInt8 {
        guard bytes.count == Self.byteCount else { throw .invalidValue(field: "\(Self.self) length") }
        self.init(uncheckedBytes: Array(bytes))
    }

    /// Fresh random bytes from the system CSPRNG.
    public static func random() -> Self {
        let key = SymmetricKey(size: SymmetricKeySize(bitCount: byteCount * 8))
        return Self(uncheckedBytes: key.withUnsafeBytes { Array($0) })
    }

    /// All zeros (used as "none" where a field is optional, e.g. no current version).
    public static var zero: Self { Self(uncheckedBytes: [UInt8](repeating: 0, count: byteCount)) }

    public var isZero: Bool { bytes.allSatisfy { $0 == 0 } }

    static func read(_ r: inout WireReader, _ field: String) throws(WireError) -> Self {
        Self(uncheckedBytes: try r.fixed(byteCount, field))
    }
}

/// A realm's random 16-byte identifier. Shown as lowercase hex (also the token `aud`).
public struct RealmID: FixedBytes {
    public static let byteCount = 16
    public let bytes: [UInt8]
    public init(uncheckedBytes: [UInt8]) { bytes = uncheckedBytes }
    public init?(hex: String) {
        guard let b = [UInt8](hexString: hex), b.count == Self.byteCount else { return nil }
        bytes = b
    }
    public var hex: String { bytes.hexString }
    public var description: String { hex }
}

/// A registration's random 16-byte version. All zeros means "no registration".
public struct RecordVersion: FixedBytes {
    public static let byteCount = 16
    public let bytes: [UInt8]
    public init(uncheckedBytes: [UInt8]) { bytes = uncheckedBytes }
    public var hex: String { bytes.hexString }
    public var description: String { isZero ? "none" : hex }
}

/// A single-use 32-byte value issued by a realm's Q0, spent by Q1 or delete. Never logged.
public struct Ticket: FixedBytes {
    public static let byteCount = 32
    public let bytes: [UInt8]
    public init(uncheckedBytes: [UInt8]) { bytes = uncheckedBytes }
    public var description: String { "Ticket(<redacted>)" }
}

/// The 16-byte id of a pending registration (R1 → R2).
public struct PendingID: FixedBytes {
    public static let byteCount = 16
    public let bytes: [UInt8]
    public init(uncheckedBytes: [UInt8]) { bytes = uncheckedBytes }
    public var description: String { "PendingID(<redacted>)" }
}

/// The single-use 32-byte challenge a Q1 answer carries, answered by Q2. Never logged.
public struct Challenge: FixedBytes {
    public static let byteCount = 32
    public let bytes: [UInt8]
    public init(uncheckedBytes: [UInt8]) { bytes = uncheckedBytes }
    public var description: String { "Challenge(<redacted>)" }
}

/// Sizes of the fixed-length fields (bytes).
public enum WireSize {
    /// RFC 9497 P384 element, compressed SEC1 (blinded / evaluated element, VOPRF public key `pk_i`).
    public static let element = 49
    /// RFC 9497 P384 DLEQ proof (c ‖ s).
    public static let proof = 96
    /// Masked share `c_i`.
    public static let maskedShare = 32
    /// Commitment `C` (HMAC-SHA256).
    public static let commitment = 32
    /// Ed25519 record-verification key `vk`.
    public static let verificationKey = 32
    /// Ed25519 signature `sig_i`.
    public static let signature = 64
    /// Unlock tag `tag_i` (HMAC-SHA256).
    public static let unlockTag = 32
    /// Unlock proof (HMAC-SHA256) sent in Q2.
    public static let unlockProof = 32
    /// Replace proof (HMAC-SHA256) sent in R2; all zero = none.
    public static let replaceProof = 32
    /// Wrapped key `W` = nonce(12) ‖ ciphertext(32) ‖ GCM tag(16).
    public static let wrappedKey = 60
    /// Longest token accepted inside a request body.
    public static let maxToken = 3072
}
