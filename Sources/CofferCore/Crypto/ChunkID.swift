#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The id of a blob (a file chunk or a tree): `HMAC-SHA256(K_id, plaintext)`, 32 bytes.
///
/// Keyed, so the storage provider cannot confirm that a known file is in a backup. Compute it with
/// ``RepositoryKeys/chunkID(of:)``. Ordered by its bytes; `description` is the 64-digit hex form.
public struct ChunkID: Hashable, Comparable, Sendable, CustomStringConvertible {
    public static let byteCount = 32
    @usableFromInline var digest: Digest256

    @inlinable init(digest: Digest256) { self.digest = digest }

    /// An id from exactly 32 bytes (for example read back from an index).
    /// - Throws: ``FormatError`` when the length is not 32.
    public init(bytes: some ContiguousBytes) throws(FormatError) {
        let d: Digest256? = bytes.withUnsafeBytes { $0.count == 32 ? Digest256($0) : nil }
        guard let d else { throw FormatError(.malformed, "a chunk id is 32 bytes") }
        digest = d
    }

    /// Parses 64 hex digits (either case); `nil` for anything else.
    public init?(hex: String) {
        guard let d = Digest256(hex: hex) else { return nil }
        digest = d
    }

    /// 64 lowercase hex digits.
    public var hex: String { digest.hex }
    public var description: String { digest.hex }
    /// The 32 bytes.
    public var bytes: [UInt8] { digest.bytes }

    /// Calls `body` with the 32 bytes, without allocating.
    @inlinable
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try digest.withUnsafeBytes(body)
    }

    /// Equality without an early exit, for checking a recomputed id against a stored one.
    @inlinable
    public func constantTimeEquals(_ other: ChunkID) -> Bool { digest.constantTimeEquals(other.digest) }

    @inlinable
    public static func < (a: ChunkID, b: ChunkID) -> Bool { a.digest < b.digest }
}

/// The name of a stored object (pack, index, snapshot): `SHA-256` of its bytes as stored.
///
/// Objects are written once and verified against their name on every read
/// (``ObjectID/verify(_:)``).
public struct ObjectID: Hashable, Comparable, Sendable, CustomStringConvertible {
    public static let byteCount = 32
    @usableFromInline var digest: Digest256

    @inlinable init(digest: Digest256) { self.digest = digest }

    /// The SHA-256 of `bytes`: the name an object with these bytes is stored under.
    public init(hashing bytes: some ContiguousBytes) {
        digest = bytes.withUnsafeBytes { raw in
            SHA256Digest.compute(raw)
        }
    }

    /// An id from exactly 32 bytes.
    /// - Throws: ``FormatError`` when the length is not 32.
    public init(bytes: some ContiguousBytes) throws(FormatError) {
        let d: Digest256? = bytes.withUnsafeBytes { $0.count == 32 ? Digest256($0) : nil }
        guard let d else { throw FormatError(.malformed, "an object id is 32 bytes") }
        digest = d
    }

    /// Parses 64 hex digits (either case); `nil` for anything else.
    public init?(hex: String) {
        guard let d = Digest256(hex: hex) else { return nil }
        digest = d
    }

    /// True when `bytes` hash to this name. Object contents are public ciphertext, so a plain
    /// comparison is fine here.
    public func verify(_ bytes: some ContiguousBytes) -> Bool {
        ObjectID(hashing: bytes) == self
    }

    /// 64 lowercase hex digits.
    public var hex: String { digest.hex }
    public var description: String { digest.hex }
    /// The 32 bytes.
    public var bytes: [UInt8] { digest.bytes }

    @inlinable
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try digest.withUnsafeBytes(body)
    }

    @inlinable
    public static func < (a: ObjectID, b: ObjectID) -> Bool { a.digest < b.digest }
}
