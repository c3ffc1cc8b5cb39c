#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Crypto

/// The subkeys of one repository, derived from the backup key `K` and the repository id:
/// `HKDF-SHA256(ikm: K, salt: repositoryID, info: "coffer/v1/" ‖ purpose, 32 bytes)`.
///
/// `K` itself is never used to encrypt or authenticate anything. The subkeys stay inside this
/// value (zeroised when released); callers use the operations built on them (chunk ids, packs,
/// sealed objects, the config tag). Never printed by `description`.
public struct RepositoryKeys: Sendable, CustomStringConvertible, CustomReflectable {
    /// The fixed purposes, each giving one subkey. The strings are part of the format.
    enum Purpose: String, CaseIterable {
        case chunkID = "chunk-id"
        case data = "data"
        case packHeader = "pack-header"
        case metadata = "metadata"
        case config = "config"
    }

    /// The 16-byte repository id that salted the derivation.
    public let repositoryID: Data

    let chunkIDKey: SymmetricKey
    let dataKey: SymmetricKey
    let packHeaderKey: SymmetricKey
    let metadataKey: SymmetricKey
    let configKey: SymmetricKey

    /// Derives every subkey.
    /// - Parameters:
    ///   - key: the root backup key `K`.
    ///   - repositoryID: the repository id read from the config (16 bytes; other lengths are
    ///     accepted by the derivation but rejected by the config parser).
    public init(key: BackupKey, repositoryID: Data) {
        self.repositoryID = repositoryID
        func derive(_ p: Purpose) -> SymmetricKey { Self.derive(p, from: key.symmetricKey, repositoryID: repositoryID) }
        chunkIDKey = derive(.chunkID)
        dataKey = derive(.data)
        packHeaderKey = derive(.packHeader)
        metadataKey = derive(.metadata)
        configKey = derive(.config)
    }

    /// The one derivation of every subkey (see the type's documentation).
    static func derive(_ purpose: Purpose, from key: SymmetricKey, repositoryID: Data) -> SymmetricKey {
        HKDF<SHA256>.deriveKey(inputKeyMaterial: key, salt: repositoryID,
                               info: Array(("coffer/v1/" + purpose.rawValue).utf8), outputByteCount: 32)
    }

    /// `HMAC-SHA256(K_id, plaintext)`: the id of a chunk or tree blob.
    public func chunkID(of plaintext: some ContiguousBytes) -> ChunkID {
        plaintext.withUnsafeBytes { ChunkID(digest: HMACDigest.compute($0, key: chunkIDKey)) }
    }

    /// `HMAC-SHA256(K_id, plaintext)` over a raw buffer (no copy).
    public func chunkID(of plaintext: UnsafeRawBufferPointer) -> ChunkID {
        ChunkID(digest: HMACDigest.compute(plaintext, key: chunkIDKey))
    }

    /// `HKDF-Expand(prk, label ‖ salt, 32)`: a per-object key under one subkey.
    static func expand(_ prk: SymmetricKey, label: String, salt: UnsafeRawBufferPointer) -> SymmetricKey {
        var info = Array(label.utf8)
        info.append(contentsOf: salt)
        return HKDF<SHA256>.expand(pseudoRandomKey: prk, info: info, outputByteCount: 32)
    }

    public var description: String { "RepositoryKeys(<redacted>)" }
    /// Only the (non-secret) repository id is visible to `dump` and debuggers.
    public var customMirror: Mirror { Mirror(self, children: ["repositoryID": repositoryID], displayStyle: .struct) }
}
