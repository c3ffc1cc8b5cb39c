import Crypto
import Foundation

/// The realm's secrets, kept in its 0600 key file (`realm.key`): the realm id, its HPKE X-Wing key
/// pairs (each with a 4-byte key id; two may be live at once while keys rotate) and the storage key
/// that derives record ids and record sealing keys. Back this file up offline: without it the
/// database is unreadable, and whoever holds it together with the database holds the realm.
public struct RealmKeys: Sendable {
    /// One HPKE key pair with its id.
    public struct HPKEKey: Sendable {
        public var id: UInt32
        public var privateKey: XWingMLKEM768X25519.PrivateKey
        public var publicKey: XWingMLKEM768X25519.PublicKey { privateKey.publicKey }
    }

    /// 16 random bytes naming this realm in tokens (`aud`), in the channel's `info` and in records.
    public var realmID: Data
    /// Live HPKE keys, newest last. Requests may use any of them.
    public var hpkeKeys: [HPKEKey]
    /// 32 random bytes; never leaves the key file.
    public var storageKey: SymmetricKey

    /// A fresh realm: random id, one HPKE key (id 1), random storage key.
    public static func generate() throws -> RealmKeys {
        RealmKeys(
            realmID: Data(SymmetricKey(size: .init(bitCount: 128)).withUnsafeBytes { Array($0) }),
            hpkeKeys: [HPKEKey(id: 1, privateKey: try XWingMLKEM768X25519.PrivateKey.generate())],
            storageKey: SymmetricKey(size: .bits256))
    }

    /// The realm id as lowercase hex (the token audience).
    public var realmIDHex: String { realmID.realmHex }

    /// Adds a new HPKE key with the next free id; the old ones stay live until retired.
    @discardableResult
    public mutating func rotate() throws -> UInt32 {
        let used = Set(hpkeKeys.map(\.id))
        let next = (hpkeKeys.map(\.id).max() ?? 0) &+ 1
        guard next != 0, !used.contains(next) else { throw RealmFileError(path: "", message: "no free HPKE key id") }
        hpkeKeys.append(HPKEKey(id: next, privateKey: try XWingMLKEM768X25519.PrivateKey.generate()))
        return next
    }

    /// Removes a key once every client has pinned its successor.
    public mutating func retire(keyID: UInt32) throws {
        guard hpkeKeys.count > 1 else { throw RealmFileError(path: "", message: "cannot retire the realm's only HPKE key") }
        guard hpkeKeys.contains(where: { $0.id == keyID }) else { throw RealmFileError(path: "", message: "no HPKE key with id \(keyID)") }
        hpkeKeys.removeAll { $0.id == keyID }
    }

    public func hpkeKey(id: UInt32) -> HPKEKey? { hpkeKeys.first { $0.id == id } }

    // MARK: file

    private struct File: Codable {
        var format: String
        var realmID: String
        var hpkeKeys: [Key]
        var storageKey: String
        struct Key: Codable {
            var id: UInt32
            var seed: String
        }
    }

    static let format = "coffer-realm-key/v1"

    /// Reads `realm.key`, refusing a file that others can read.
    public static func load(from url: URL) throws -> RealmKeys {
        let data = try AtomicFile.readSecret(url)
        let bad = RealmFileError(path: url.path, message: "\(url.path) is not a valid realm key file")
        guard let file = try? JSONDecoder().decode(File.self, from: data), file.format == format,
              let id = Data(realmHex: file.realmID), id.count == 16,
              let sk = Data(base64Encoded: file.storageKey), sk.count == 32, !file.hpkeKeys.isEmpty
        else { throw bad }
        var keys: [HPKEKey] = []
        for k in file.hpkeKeys {
            guard let seed = Data(base64Encoded: k.seed),
                  let priv = try? XWingMLKEM768X25519.PrivateKey(seedRepresentation: seed, publicKey: nil)
            else { throw bad }
            keys.append(HPKEKey(id: k.id, privateKey: priv))
        }
        guard Set(keys.map(\.id)).count == keys.count else { throw bad }
        return RealmKeys(realmID: id, hpkeKeys: keys, storageKey: SymmetricKey(data: sk))
    }

    /// Writes `realm.key` atomically with mode 0600.
    public func save(to url: URL) throws {
        let file = File(
            format: Self.format, realmID: realmIDHex,
            hpkeKeys: hpkeKeys.map { File.Key(id: $0.id, seed: $0.privateKey.seedRepresentation.base64EncodedString()) },
            storageKey: storageKey.withUnsafeBytes { Data($0) }.base64EncodedString())
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        try AtomicFile.write(Array(try enc.encode(file)), to: url, mode: 0o600)
    }
}

extension RealmKeys: CustomStringConvertible {
    /// Names the realm and its key ids only: never key material.
    public var description: String { "RealmKeys(realm \(realmIDHex), HPKE key ids \(hpkeKeys.map(\.id)))" }
}
