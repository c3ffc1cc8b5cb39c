#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Crypto

/// The kind of a sealed object. Bound into its AAD, so an object cannot be passed off as another
/// kind. Raw values are part of the format; the engine may define more (docs/REPOSITORY-OBJECTS.md).
public struct SealedObjectType: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let index = SealedObjectType(rawValue: 1)
    public static let snapshot = SealedObjectType(rawValue: 2)
    public static let tree = SealedObjectType(rawValue: 3)
    public static let lock = SealedObjectType(rawValue: 4)
    public static let head = SealedObjectType(rawValue: 5)

    public var description: String {
        switch rawValue {
        case 1: return "index"
        case 2: return "snapshot"
        case 3: return "tree"
        case 4: return "lock"
        case 5: return "head"
        default: return "object type \(rawValue)"
        }
    }
}

/// A single encrypted metadata object (index, snapshot, …) with its own fresh salt:
/// `"CFSO" ‖ version (u16) ‖ type (u8) ‖ flags (u8) ‖ salt (32) ‖ AES-256-GCM(inner)` under
/// `HKDF-Expand(K_metadata, "coffer/v1/object" ‖ salt, 32)`, nonce 0, AAD = the 40-byte prefix.
/// Stored under its ``ObjectID`` (SHA-256 of the bytes). See docs/FORMAT.md, "Sealed objects".
public enum SealedObject {
    static let magic: [UInt8] = Array("CFSO".utf8)
    static let prefixLength = 40
    static let innerFixedLength = 16
    static let keyLabel = "coffer/v1/object"
    /// Default bound on a sealed object's plaintext when opening.
    public static let defaultMaxLength = 1 << 30

    /// Encrypts `plaintext` as an object of `type`.
    /// - Parameters:
    ///   - compress: try raw deflate (kept only if it saves at least 1/8).
    ///   - deflater: a reusable compressor (one is made if `nil`).
    ///   - padding: the repository's padding: the stored object is `padding.paddedLength(n)` bytes
    ///     for `n` unpadded bytes (zeros inside the AEAD, after the payload).
    /// - Returns: the bytes to store; name them with `ObjectID(hashing:)`.
    public static func seal(type: SealedObjectType, plaintext: some ContiguousBytes, keys: RepositoryKeys,
                            compress: Bool = true, deflater: Deflater? = nil, padding: PaddingPolicy = .none) -> Data {
        var rng = SystemRandomNumberGenerator()
        let salt = Data((0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) })
        return seal(type: type, plaintext: plaintext, keys: keys, compress: compress, deflater: deflater,
                    salt: salt, padding: padding)
    }

    /// Bytes a sealed object adds to its payload: prefix, inner fixed fields, tag.
    public static let overhead = prefixLength + innerFixedLength + PackFormat.tagLength

    /// Sealing with a chosen salt and a padding policy: test vectors.
    @_spi(Testing)
    public static func seal(type: SealedObjectType, plaintext: some ContiguousBytes, keys: RepositoryKeys,
                            compress: Bool, deflater: Deflater?, salt: Data, padding: PaddingPolicy) -> Data {
        seal(type: type, plaintext: plaintext, keys: keys, compress: compress, deflater: deflater, salt: salt,
             paddingLength: nil, policy: padding)
    }

    /// Sealing with a chosen salt and padding: test vectors and Part B.
    @_spi(Testing)
    public static func seal(type: SealedObjectType, plaintext: some ContiguousBytes, keys: RepositoryKeys,
                            compress: Bool, deflater: Deflater?, salt: Data, paddingLength: Int) -> Data {
        seal(type: type, plaintext: plaintext, keys: keys, compress: compress, deflater: deflater, salt: salt,
             paddingLength: paddingLength, policy: .none)
    }

    /// `paddingLength` when given, else the padding `policy` asks for once the payload's size is known.
    static func seal(type: SealedObjectType, plaintext: some ContiguousBytes, keys: RepositoryKeys,
                     compress: Bool, deflater: Deflater?, salt: Data, paddingLength fixedPadding: Int?,
                     policy: PaddingPolicy) -> Data {
        precondition(salt.count == 32 && (fixedPadding ?? 0) >= 0 && (fixedPadding ?? 0) <= Int(UInt32.max))
        return plaintext.withUnsafeBytes { plain in
            var prefix = ByteWriter(capacity: prefixLength)
            prefix.raw(magic)
            prefix.u16(FormatVersion.current)
            prefix.u8(type.rawValue)
            prefix.u8(0)  // flags
            prefix.raw(salt)

            func inner(_ payload: UnsafeRawBufferPointer, _ c: Compression) -> [UInt8] {
                let unpadded = overhead + payload.count
                let paddingLength = fixedPadding
                    ?? min(Int(UInt32.max), max(0, policy.paddedLength(unpadded) - unpadded))
                var w = ByteWriter(capacity: innerFixedLength + payload.count + paddingLength)
                w.u8(c.rawValue)
                w.zeros(3)
                w.u64(UInt64(plain.count))
                w.u32(UInt32(paddingLength))
                w.raw(payload)
                w.zeros(paddingLength)
                return w.bytes
            }
            let body: [UInt8]
            if compress {
                body = (deflater ?? Deflater()).compress(plain) { c in c.map { inner($0, .deflate) } ?? inner(plain, .none) }
            } else {
                body = inner(plain, .none)
            }
            let key = salt.withUnsafeBytes { RepositoryKeys.expand(keys.metadataKey, label: keyLabel, salt: $0) }
            var out = Data(prefix.bytes)
            out.reserveCapacity(prefixLength + body.count + 16)
            body.withUnsafeBytes { b in
                prefix.bytes.withUnsafeBytes { a in
                    aeadSeal(b, key: key, nonce: counterNonce(0), aad: a, appendingTo: &out)
                }
            }
            return out
        }
    }

    /// The type written in an object's clear prefix (unauthenticated until ``open(_:expecting:keys:maxLength:inflater:)``).
    public static func peekType(_ bytes: some ContiguousBytes) -> SealedObjectType? {
        bytes.withUnsafeBytes { raw in
            guard raw.count >= prefixLength, raw.starts(with: magic) else { return nil }
            return SealedObjectType(rawValue: raw[6])
        }
    }

    /// Decrypts an object and checks that it is of the expected type.
    /// - Parameters:
    ///   - maxLength: largest plaintext accepted (bounds decompression).
    /// - Throws: ``FormatError``: `.truncated` or `.malformed` or `.unsupportedVersion` (damaged),
    ///   `.authenticationFailed` (wrong key or modified: never which), `.unexpectedType`,
    ///   `.decompressionFailed`, `.tooLarge`.
    public static func open(_ bytes: some ContiguousBytes, expecting type: SealedObjectType, keys: RepositoryKeys,
                            maxLength: Int = defaultMaxLength, inflater: Inflater? = nil) throws(FormatError) -> Data {
        try bytes.withRawBytes { (raw) throws(FormatError) -> Data in
            let what = "\(type) object"
            guard raw.count >= prefixLength + innerFixedLength + PackFormat.tagLength else {
                throw FormatError(.truncated, "\(raw.count) bytes is too short for a sealed object", object: what)
            }
            var r = ByteReader(raw)
            guard r.bytes(4)!.elementsEqual(magic) else {
                throw FormatError(.malformed, "not a Coffer sealed object (bad magic)", object: what)
            }
            let version = r.u16()!
            guard version == FormatVersion.current else {
                throw FormatError(.unsupportedVersion, "format version \(version) is not supported by this version of Coffer", object: what)
            }
            let found = SealedObjectType(rawValue: r.u8()!)
            let flags = r.u8()!
            guard flags == 0 else { throw FormatError(.malformed, "unknown flags \(flags)", object: what) }
            let salt = r.bytes(32)!
            let key = RepositoryKeys.expand(keys.metadataKey, label: keyLabel, salt: salt)
            let aad = UnsafeRawBufferPointer(rebasing: raw[0..<prefixLength])
            let sealed = UnsafeRawBufferPointer(rebasing: raw[prefixLength...])
            guard let inner = aeadOpen(sealed, key: key, nonce: counterNonce(0), aad: aad) else {
                var e = FormatError.authentication("sealed object")
                e.object = what
                throw e
            }
            guard found == type else {
                throw FormatError(.unexpectedType, "is a \(found) object, not a \(type) object", object: what)
            }
            return try inner.withRawBytes { (p) throws(FormatError) -> Data in
                var r = ByteReader(p)
                let compRaw = r.u8()!
                let reserved = r.bytes(3)!
                let ulen = r.u64()!
                let padding = Int(r.u32()!)
                guard let comp = Compression(rawValue: compRaw), allZero(reserved) else {
                    throw FormatError(.malformed, "unknown compression or flags", object: what)
                }
                guard ulen <= UInt64(maxLength) else {
                    throw FormatError(.tooLarge, "declares \(ulen) bytes, more than the \(maxLength) allowed", object: what)
                }
                guard padding <= r.remaining else {
                    throw FormatError(.malformed, "padding longer than the object", object: what)
                }
                let payload = r.bytes(r.remaining - padding)!
                guard allZero(r.bytes(padding)!) else { throw FormatError(.malformed, "padding is not zero", object: what) }
                switch comp {
                case .none:
                    guard payload.count == Int(ulen) else {
                        throw FormatError(.malformed, "length does not match its declared length", object: what)
                    }
                    return Data(payload)
                case .deflate:
                    do throws(FormatError) {
                        return try (inflater ?? Inflater()).decompress(payload, expectedLength: Int(ulen))
                    } catch {
                        var e = error
                        e.object = what
                        throw e
                    }
                }
            }
        }
    }
}
