#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CofferCore
import Crypto

/// The sealed channel between a client and one realm (every request and every answer).
///
/// - Request: `keyID(4, big-endian) ‖ enc(1120) ‖ HPKE.seal(body, aad: [messageType])`, HPKE base
///   mode, `XWingMLKEM768X25519_SHA256_AES_GCM_256`, `info = "coffer-vault/v1/request" ‖ realmID`,
///   a fresh context per request.
/// - Response (RFC 9458 §4.4): `secret = Export("coffer-vault/v1/response", 32)`, `r` = 32 random
///   bytes, `prk = HKDF-Extract(salt: enc ‖ r, ikm: secret)`, `key = Expand(prk, "key", 32)`,
///   `iv = Expand(prk, "nonce", 12)`; sent as `r ‖ AES-256-GCM(key, iv, answer)` (ciphertext ‖ tag).
public enum VaultChannel {
    public static let ciphersuite = HPKE.Ciphersuite.XWingMLKEM768X25519_SHA256_AES_GCM_256
    public static let requestInfoLabel = Array("coffer-vault/v1/request".utf8)
    public static let responseExportLabel = Array("coffer-vault/v1/response".utf8)
    /// X-Wing encapsulated key size.
    public static let encapsulatedKeySize = 1120
    /// X-Wing public key size.
    public static let publicKeySize = 1216
    public static let keyIDSize = 4
    public static let responseNonceSize = 32
    static let gcmTagSize = 16

    /// `info` for requests to `realmID`.
    public static func info(realmID: RealmID) -> Data { Data(requestInfoLabel + realmID.bytes) }

    /// Seals `body` (an encoded, padded request) for one realm. Returns the bytes to POST and the
    /// opener for this request's response (usable once, for this request only).
    public static func sealRequest(body: [UInt8], type: VaultMessageType, realmID: RealmID,
                                   key: RealmPublicKey) throws(ChannelError) -> (request: [UInt8], opener: ResponseOpener) {
        do {
            var sender = try HPKE.Sender(recipientKey: key.publicKey, ciphersuite: ciphersuite, info: info(realmID: realmID))
            let ct = try sender.seal(body, authenticating: [type.rawValue])
            let secret = try sender.exportSecret(context: responseExportLabel, outputByteCount: 32)
            let enc = Array(sender.encapsulatedKey)
            var out = ByteWriter(capacity: keyIDSize + enc.count + ct.count)
            out.u32(key.id)
            out.raw(enc)
            out.raw(ct)
            return (out.bytes, ResponseOpener(encapsulatedKey: enc, secret: secret))
        } catch {
            throw .sealFailed
        }
    }

    /// The key id a sealed request names (the realm picks its private key by it).
    public static func keyID<C: Collection>(ofRequest request: C) throws(ChannelError) -> UInt32 where C.Element == UInt8 {
        guard request.count >= keyIDSize + encapsulatedKeySize + gcmTagSize else { throw .malformed }
        var r = ByteReader(Array(request.prefix(keyIDSize)))
        return r.u32()!  // four bytes: checked above
    }

    /// Realm side: opens a sealed request of type `type` (from the URL path) with the private key
    /// the request's key id names. Returns the plaintext body and the sealer for its answer.
    /// - Throws: ``ChannelError/unknownKey(_:)`` or ``ChannelError/openFailed``; the realm then cannot
    ///   answer sealed and replies with a bare HTTP error, which clients treat as a transport failure.
    public static func openRequest<C: Collection>(_ request: C, type: VaultMessageType, realmID: RealmID,
                                                  privateKeys: [UInt32: XWingMLKEM768X25519.PrivateKey]) throws(ChannelError) -> (body: [UInt8], sealer: ResponseSealer) where C.Element == UInt8 {
        let bytes = Array(request)
        let id = try keyID(ofRequest: bytes)
        guard let sk = privateKeys[id] else { throw .unknownKey(id) }
        let enc = Data(bytes[keyIDSize..<keyIDSize + encapsulatedKeySize])
        let ct = Data(bytes[(keyIDSize + encapsulatedKeySize)...])
        do {
            var recipient = try HPKE.Recipient(privateKey: sk, ciphersuite: ciphersuite, info: info(realmID: realmID), encapsulatedKey: enc)
            let body = try recipient.open(ct, authenticating: [type.rawValue])
            let secret = try recipient.exportSecret(context: responseExportLabel, outputByteCount: 32)
            return (Array(body), ResponseSealer(encapsulatedKey: Array(enc), secret: secret))
        } catch {
            throw .openFailed
        }
    }

    static func responseKey(secret: SymmetricKey, encapsulatedKey: [UInt8], nonce r: [UInt8]) -> (SymmetricKey, AES.GCM.Nonce) {
        let prk = HKDF<SHA256>.extract(inputKeyMaterial: secret, salt: encapsulatedKey + r)
        let key = HKDF<SHA256>.expand(pseudoRandomKey: prk, info: Array("key".utf8), outputByteCount: 32)
        let iv = HKDF<SHA256>.expand(pseudoRandomKey: prk, info: Array("nonce".utf8), outputByteCount: 12)
        let nonce = iv.withUnsafeBytes { try! AES.GCM.Nonce(data: Array($0)) }  // 12 bytes: cannot fail
        return (key, nonce)
    }
}

/// A realm's pinned HPKE public key and its id.
public struct RealmPublicKey: Sendable {
    public let id: UInt32
    public let publicKey: XWingMLKEM768X25519.PublicKey
    public init(id: UInt32, publicKey: XWingMLKEM768X25519.PublicKey) {
        self.id = id
        self.publicKey = publicKey
    }
    /// From the 1216-byte raw X-Wing public key.
    public init(id: UInt32, rawRepresentation: [UInt8]) throws(ChannelError) {
        guard rawRepresentation.count == VaultChannel.publicKeySize,
              let pk = try? XWingMLKEM768X25519.PublicKey(rawRepresentation: rawRepresentation) else {
            throw .badPublicKey
        }
        self.init(id: id, publicKey: pk)
    }
    public var rawRepresentation: [UInt8] { Array(publicKey.rawRepresentation) }
}

/// Client side: opens the one response to the request it was made for.
public struct ResponseOpener: Sendable {
    let encapsulatedKey: [UInt8]
    let secret: SymmetricKey

    /// Opens `r ‖ AES-GCM(answer)`. Any failure (short, forged, from another request) is a
    /// transport failure, never an answer.
    public func open<C: Collection>(_ response: C) throws(ChannelError) -> [UInt8] where C.Element == UInt8 {
        let bytes = Array(response)
        guard bytes.count >= VaultChannel.responseNonceSize + VaultChannel.gcmTagSize else { throw .openFailed }
        let r = Array(bytes[0..<VaultChannel.responseNonceSize])
        let (key, nonce) = VaultChannel.responseKey(secret: secret, encapsulatedKey: encapsulatedKey, nonce: r)
        let rest = bytes[VaultChannel.responseNonceSize...]
        do {
            let box = try AES.GCM.SealedBox(nonce: nonce, ciphertext: rest.dropLast(VaultChannel.gcmTagSize),
                                            tag: rest.suffix(VaultChannel.gcmTagSize))
            return Array(try AES.GCM.open(box, using: key))
        } catch {
            throw .openFailed
        }
    }
}

/// Realm side: seals the one answer to the request it was opened from.
public struct ResponseSealer: Sendable {
    let encapsulatedKey: [UInt8]
    let secret: SymmetricKey

    /// `r ‖ AES-GCM(key, iv, answer)` with a fresh random `r`.
    public func seal(_ answer: [UInt8]) throws(ChannelError) -> [UInt8] {
        let r = RealmID.random().bytes + RealmID.random().bytes  // 32 random bytes
        let (key, nonce) = VaultChannel.responseKey(secret: secret, encapsulatedKey: encapsulatedKey, nonce: r)
        do {
            let box = try AES.GCM.seal(answer, using: key, nonce: nonce)
            return r + Array(box.ciphertext) + Array(box.tag)
        } catch {
            throw .sealFailed
        }
    }
}

/// A channel failure. Deliberately uninformative about why a tag did not verify.
public struct ChannelError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What kind of failure this is: compare with `==` or switch with a `default:` (codes can be
    /// added in later versions without breaking callers).
    public struct Code: Sendable, Hashable, CaseIterable, CustomStringConvertible {
        private enum Base: String, Sendable, Hashable, CaseIterable { case sealFailed, openFailed, malformed, unknownKey, badPublicKey }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        public static let sealFailed = Code(.sealFailed)
        /// Forged, corrupted or not for this request.
        public static let openFailed = Code(.openFailed)
        /// Too short to be a sealed message.
        public static let malformed = Code(.malformed)
        /// The request names a key id (``ChannelError/keyID``) the realm does not have.
        public static let unknownKey = Code(.unknownKey)
        public static let badPublicKey = Code(.badPublicKey)

        public static var allCases: [Code] { Base.allCases.map(Code.init) }
        public var description: String { base.rawValue }
    }

    public var code: Code
    public var message: String
    /// With ``Code/unknownKey``: the key id the request named.
    public var keyID: UInt32?

    private init(_ code: Code, _ message: String, keyID: UInt32? = nil) {
        self.code = code
        self.message = message
        self.keyID = keyID
    }

    public var description: String { message }

    public static let sealFailed = ChannelError(.sealFailed, "could not seal the message")
    public static let openFailed = ChannelError(.openFailed, "the message did not decrypt (forged, corrupted or not for this request)")
    public static let malformed = ChannelError(.malformed, "the sealed message is too short")
    public static func unknownKey(_ id: UInt32) -> ChannelError { ChannelError(.unknownKey, "no HPKE key with id \(id)", keyID: id) }
    public static let badPublicKey = ChannelError(.badPublicKey, "not an X-Wing public key")
}
