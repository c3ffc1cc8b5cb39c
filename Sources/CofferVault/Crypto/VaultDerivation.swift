import Foundation  // precomposedStringWithCanonicalMapping (NFC) is in Foundation proper
import Crypto
import CryptoExtras

/// Every derivation of the protocol, exactly as docs/VAULT.md writes them. All HKDF are
/// HKDF-SHA256 with an empty salt unless stated, 32-byte outputs. Pure functions, no I/O.
public enum VaultDerivation {
    public static let saltLabel = Array("coffer-vault/v1/salt".utf8)
    public static let maskLabel = Array("coffer-vault/v1/mask".utf8)
    public static let recordSignLabel = Array("coffer-vault/v1/record-sign".utf8)
    public static let recordLabel = Array("coffer-vault/v1/record".utf8)
    public static let commitLabel = Array("coffer-vault/v1/commit".utf8)
    public static let unlockLabel = Array("coffer-vault/v1/unlock".utf8)
    public static let unlockTagLabel = Array("coffer-vault/v1/unlock-tag".utf8)
    public static let unlockProofLabel = Array("coffer-vault/v1/unlock-proof".utf8)
    public static let wrapLabel = Array("coffer-vault/v1/wrap".utf8)
    public static let replaceProofLabel = Array("coffer-vault/v1/replace-proof".utf8)

    /// The password as hashed: Unicode NFC, not trimmed, UTF-8.
    public static func normalizedPassword(_ password: String) -> [UInt8] {
        Array(password.precomposedStringWithCanonicalMapping.utf8)
    }

    /// `salt = SHA-256("coffer-vault/v1/salt" ‖ version ‖ lp(tenant) ‖ lp(user))`.
    public static func salt(version: RecordVersion, tenant: [UInt8], user: [UInt8]) -> [UInt8] {
        Array(SHA256.hash(data: saltLabel + version.bytes + lp(tenant) + lp(user)))
    }

    /// `h = scrypt(NFC(password), salt, N, r, p)`, 32 bytes.
    public static func stretch(password: String, salt: [UInt8], policy: VaultPolicy) throws -> SymmetricKey {
        try stretch(passwordBytes: normalizedPassword(password), salt: salt, policy: policy)
    }

    /// scrypt over already-normalised password bytes.
    public static func stretch(passwordBytes: [UInt8], salt: [UInt8], policy: VaultPolicy) throws -> SymmetricKey {
        try KDF.Scrypt.deriveKey(from: passwordBytes, salt: salt, outputByteCount: 32,
                                 rounds: policy.n, blockSize: Int(policy.r), parallelism: Int(policy.p))
    }

    /// `HKDF(rwd_i, salt: realmID_i, info: "coffer-vault/v1/mask", 32)`.
    public static func mask(rwd: [UInt8], realmID: RealmID) -> [UInt8] {
        hkdf(SymmetricKey(data: rwd), salt: realmID.bytes, info: maskLabel)
    }

    /// `c_i = s_i XOR mask` (and back).
    public static func xor(_ a: [UInt8], _ b: [UInt8]) -> [UInt8] {
        precondition(a.count == b.count)
        return zip(a, b).map { $0 ^ $1 }
    }

    /// The record-signing key: Ed25519 seed `HKDF(S, info: "coffer-vault/v1/record-sign")`.
    public static func recordSigningKey(secret s: SymmetricKey) -> Curve25519.Signing.PrivateKey {
        try! Curve25519.Signing.PrivateKey(rawRepresentation: hkdf(s, info: recordSignLabel))  // 32 bytes: cannot fail
    }

    /// `"coffer-vault/v1/record" ‖ version ‖ realmID ‖ x ‖ pk_i ‖ c_i ‖ policy` (x one byte).
    public static func recordMessage(version: RecordVersion, realmID: RealmID, x: UInt8, oprfPublicKey: [UInt8],
                                     maskedShare: [UInt8], policy: VaultPolicy) -> [UInt8] {
        recordLabel + version.bytes + realmID.bytes + [x] + oprfPublicKey + maskedShare + policy.bytes
    }

    /// True when `sig` is a valid Ed25519 signature by `vk` over the record message.
    public static func verifyRecord(signature: [UInt8], verificationKey: [UInt8], message: [UInt8]) -> Bool {
        guard signature.count == WireSize.signature,
              let vk = try? Curve25519.Signing.PublicKey(rawRepresentation: verificationKey) else { return false }
        return vk.isValidSignature(signature, for: message)
    }

    /// `C = HMAC(HKDF(S, info: "coffer-vault/v1/commit"), version ‖ policy ‖ n ‖ t ‖ vk ‖ lp(tenant) ‖ lp(user))`,
    /// n and t one byte each.
    public static func commitment(secret s: SymmetricKey, version: RecordVersion, policy: VaultPolicy, n: Int, t: Int,
                                  verificationKey: [UInt8], tenant: [UInt8], user: [UInt8]) -> [UInt8] {
        let key = SymmetricKey(data: hkdf(s, info: commitLabel))
        let msg = version.bytes + policy.bytes + [UInt8(n), UInt8(t)] + verificationKey + lp(tenant) + lp(user)
        return Array(HMAC<SHA256>.authenticationCode(for: msg, using: key))
    }

    /// `U = HKDF(S, info: "coffer-vault/v1/unlock")`.
    public static func unlockKey(secret s: SymmetricKey) -> SymmetricKey {
        SymmetricKey(data: hkdf(s, info: unlockLabel))
    }

    /// `tag_i = HMAC(U, "coffer-vault/v1/unlock-tag" ‖ realmID ‖ version)`.
    public static func unlockTag(unlockKey u: SymmetricKey, realmID: RealmID, version: RecordVersion) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: unlockTagLabel + realmID.bytes + version.bytes, using: u))
    }

    /// `proof_i = HMAC(tag_i, "coffer-vault/v1/unlock-proof" ‖ realmID ‖ version ‖ challenge)`.
    /// The realm computes the same from its stored tag and compares in constant time.
    public static func unlockProof(tag: [UInt8], realmID: RealmID, version: RecordVersion, challenge: Challenge) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: unlockProofLabel + realmID.bytes + version.bytes + challenge.bytes,
                                              using: SymmetricKey(data: tag)))
    }

    /// R2's replace proof: `HMAC-SHA256(tag_cur, "coffer-vault/v1/replace-proof" ‖ realmID ‖ currentVersion ‖
    /// newVersion ‖ pendingID)`, keyed by the unlock tag the realm stores for the record being replaced
    /// (only a client that recovered `S` of that version, i.e. knows the current password, can make it).
    /// The realm-issued, single-use pending id makes it fresh.
    public static func replaceProof(tag: [UInt8], realmID: RealmID, currentVersion: RecordVersion, newVersion: RecordVersion,
                                    pendingID: PendingID) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(
            for: replaceProofLabel + realmID.bytes + currentVersion.bytes + newVersion.bytes + pendingID.bytes,
            using: SymmetricKey(data: tag)))
    }

    /// Realm side: constant-time check of a replace proof against the stored tag.
    public static func verifyReplaceProof(_ proof: [UInt8], tag: [UInt8], realmID: RealmID, currentVersion: RecordVersion,
                                          newVersion: RecordVersion, pendingID: PendingID) -> Bool {
        HMAC<SHA256>.isValidAuthenticationCode(
            proof, authenticating: replaceProofLabel + realmID.bytes + currentVersion.bytes + newVersion.bytes + pendingID.bytes,
            using: SymmetricKey(data: tag))
    }

    /// Realm side: constant-time check of an unlock proof against the stored tag.
    public static func verifyUnlockProof(_ proof: [UInt8], tag: [UInt8], realmID: RealmID, version: RecordVersion, challenge: Challenge) -> Bool {
        HMAC<SHA256>.isValidAuthenticationCode(proof, authenticating: unlockProofLabel + realmID.bytes + version.bytes + challenge.bytes,
                                               using: SymmetricKey(data: tag))
    }

    /// `aad = version ‖ lp(tenant) ‖ lp(user)`.
    static func wrapAAD(version: RecordVersion, tenant: [UInt8], user: [UInt8]) -> [UInt8] {
        version.bytes + lp(tenant) + lp(user)
    }

    /// `W = nonce ‖ AES-GCM(HKDF(S, info: "coffer-vault/v1/wrap"), K, aad)`, 60 bytes.
    public static func wrap(key k: SymmetricKey, secret s: SymmetricKey, version: RecordVersion, tenant: [UInt8], user: [UInt8],
                            nonce: AES.GCM.Nonce = AES.GCM.Nonce()) throws -> [UInt8] {
        let wk = SymmetricKey(data: hkdf(s, info: wrapLabel))
        let box = try k.withUnsafeBytes { kb in
            try AES.GCM.seal(Array(kb), using: wk, nonce: nonce, authenticating: wrapAAD(version: version, tenant: tenant, user: user))
        }
        return Array(nonce) + Array(box.ciphertext) + Array(box.tag)
    }

    /// Opens `W`; `nil` when it does not authenticate (wrong S, version, tenant or user).
    public static func unwrap(_ w: [UInt8], secret s: SymmetricKey, version: RecordVersion, tenant: [UInt8], user: [UInt8]) -> SymmetricKey? {
        guard w.count == WireSize.wrappedKey, let nonce = try? AES.GCM.Nonce(data: w[0..<12]),
              let box = try? AES.GCM.SealedBox(nonce: nonce, ciphertext: w[12..<44], tag: w[44..<60]) else { return nil }
        let wk = SymmetricKey(data: hkdf(s, info: wrapLabel))
        guard let k = try? AES.GCM.open(box, using: wk, authenticating: wrapAAD(version: version, tenant: tenant, user: user)) else { return nil }
        return SymmetricKey(data: k)
    }

    static func hkdf(_ ikm: SymmetricKey, salt: [UInt8] = [], info: [UInt8]) -> [UInt8] {
        HKDF<SHA256>.deriveKey(inputKeyMaterial: ikm, salt: salt, info: info, outputByteCount: 32).withUnsafeBytes { Array($0) }
    }
}
