import CofferCore
import Crypto
import Foundation

/// A user's record as the realm keeps it (sealed in the database): either live key material or the
/// tombstone that remains after it was destroyed.
struct StoredRecord: Sendable, Equatable {
    enum Kind: UInt8, Sendable { case active = 1, destroyed = 2 }

    var kind: Kind
    var version: Data
    /// The user's VOPRF private key at this realm (raw scalar), empty in a tombstone.
    var oprfKey: Data = Data()
    var x: UInt8 = 0
    /// `pk_i`, the VOPRF public key as RFC 9497 serialises it.
    var pk: Data = Data()
    var c: Data = Data()
    var commitment: Data = Data()
    var vk: Data = Data()
    var sig: Data = Data()
    var tag: Data = Data()
    var wrapped: Data = Data()
    var policy: Data = Data()
    var attempts: Int = 0
    /// `L` for this record.
    var guessLimit: Int = 0
    /// How many times a `reset`-scoped token replaced this user's active record without proof of
    /// the current password (carried over by every later registration). Records written before the
    /// field existed decode with 0.
    var resets: Int = 0

    static func tombstone(version: Data) -> StoredRecord { StoredRecord(kind: .destroyed, version: version) }

    func encoded() -> [UInt8] {
        var w = ByteWriter(capacity: 512)
        w.u8(1)
        w.u8(kind.rawValue)
        for field in [version, oprfKey, Data([x]), pk, c, commitment, vk, sig, tag, wrapped, policy] { w.lp16(field) }
        w.u8(UInt8(clamping: attempts))
        w.u8(UInt8(clamping: guessLimit))
        if resets > 0 { w.u32(UInt32(clamping: resets)) }
        return w.bytes
    }

    init(kind: Kind, version: Data) {
        self.kind = kind
        self.version = version
    }

    init(kind: Kind, version: Data, oprfKey: Data, x: UInt8, pk: Data, c: Data, commitment: Data, vk: Data,
         sig: Data, tag: Data, wrapped: Data, policy: Data, attempts: Int, guessLimit: Int, resets: Int = 0) {
        self.kind = kind
        self.version = version
        self.oprfKey = oprfKey
        self.x = x
        self.pk = pk
        self.c = c
        self.commitment = commitment
        self.vk = vk
        self.sig = sig
        self.tag = tag
        self.wrapped = wrapped
        self.policy = policy
        self.attempts = attempts
        self.guessLimit = guessLimit
        self.resets = resets
    }

    init?(decoding bytes: [UInt8]) {
        var r = ByteReader(bytes)
        guard r.u8() == 1, let k = r.u8().flatMap(Kind.init(rawValue:)) else { return nil }
        var fields: [Data] = []
        for _ in 0..<11 {
            guard let f = r.lp16() else { return nil }
            fields.append(Data(f))
        }
        guard let attempts = r.u8(), let limit = r.u8(), fields[2].count == 1 else { return nil }
        // Optional trailer (absent in records written before resets were counted): resets, 4 bytes big-endian.
        var resets = 0
        if !r.atEnd {
            guard let n = r.u32(), r.atEnd else { return nil }
            resets = Int(n)
        }
        self.init(kind: k, version: fields[0], oprfKey: fields[1], x: fields[2][fields[2].startIndex], pk: fields[3],
                  c: fields[4], commitment: fields[5], vk: fields[6], sig: fields[7], tag: fields[8],
                  wrapped: fields[9], policy: fields[10], attempts: Int(attempts), guessLimit: Int(limit), resets: resets)
    }
}

/// Fields with 2-byte lengths (the realm's storage encodings and derivation inputs): `lp(f1) ‖ lp(f2) ‖ ...`.
func lpJoin(_ fields: [Data]) -> [UInt8] {
    var w = ByteWriter(capacity: fields.reduce(0) { $0 + 2 + $1.count })
    for f in fields { w.lp16(f) }
    return w.bytes
}

/// The realm's storage cryptography: record ids and the AES-GCM seals of everything it stores.
struct RecordCrypto: Sendable {
    private let recordIDKey: SymmetricKey
    private let storageKey: SymmetricKey
    private let auditKey: SymmetricKey

    init(storageKey: SymmetricKey) {
        self.storageKey = storageKey
        self.recordIDKey = Self.hkdf(storageKey, info: Array("coffer-vault/v1/record-id".utf8))
        self.auditKey = Self.hkdf(storageKey, info: Array("coffer-vault/v1/realm-audit-ref".utf8))
    }

    static func hkdf(_ key: SymmetricKey, info: [UInt8]) -> SymmetricKey {
        HKDF<SHA256>.deriveKey(inputKeyMaterial: key, salt: [UInt8](), info: info, outputByteCount: 32)
    }

    /// `HMAC(HKDF(storageKey, "coffer-vault/v1/record-id"), lp(tenant) ‖ lp(user))`.
    func recordKey(tenant: String, user: String) -> Data {
        Data(HMAC<SHA256>.authenticationCode(for: lpJoin([Data(tenant.utf8), Data(user.utf8)]), using: recordIDKey))
    }

    /// A short pseudonymous user reference for audit logs: stable per user, unlinkable to the
    /// database's record ids without the storage key.
    func auditRef(tenant: String, user: String) -> String {
        let mac = HMAC<SHA256>.authenticationCode(for: lpJoin([Data(tenant.utf8), Data(user.utf8)]), using: auditKey)
        return Data(mac).prefix(8).realmHex
    }

    private func sealKey(label: String, recordKey: Data) -> SymmetricKey {
        Self.hkdf(storageKey, info: Array(label.utf8) + Array(recordKey))
    }

    private static let recordLabel = "coffer-vault/v1/record-seal"
    /// Pending registrations, tickets and challenges: same construction, their own labels.
    private static let sideLabel = "coffer-vault/v1/realm-side-seal"

    /// AES-GCM under `HKDF(storageKey, "coffer-vault/v1/record-seal" ‖ recordKey)`, AAD = recordKey ‖ gen.
    func sealRecord(_ record: StoredRecord, recordKey: Data, gen: Int64) throws -> Data {
        try AES.GCM.seal(record.encoded(), using: sealKey(label: Self.recordLabel, recordKey: recordKey),
                         authenticating: recordKey + Self.be64(gen)).combined!
    }

    func openRecord(_ sealed: Data, recordKey: Data, gen: Int64) throws -> StoredRecord {
        let box = try AES.GCM.SealedBox(combined: sealed)
        let plain = try AES.GCM.open(box, using: sealKey(label: Self.recordLabel, recordKey: recordKey),
                                     authenticating: recordKey + Self.be64(gen))
        guard let r = StoredRecord(decoding: Array(plain)) else { throw StoreError.corrupt }
        return r
    }

    /// Seals a side value (pending key, stored answer, challenge) bound to its table and row.
    func sealSide(_ plain: [UInt8], table: String, rowID: Data, recordKey: Data) throws -> Data {
        try AES.GCM.seal(plain, using: sealKey(label: Self.sideLabel, recordKey: recordKey),
                         authenticating: Data(table.utf8) + rowID).combined!
    }

    func openSide(_ sealed: Data, table: String, rowID: Data, recordKey: Data) throws -> [UInt8] {
        let box = try AES.GCM.SealedBox(combined: sealed)
        return Array(try AES.GCM.open(box, using: sealKey(label: Self.sideLabel, recordKey: recordKey),
                                      authenticating: Data(table.utf8) + rowID))
    }

    /// A head slot's row id: `HMAC(HKDF(storageKey, "coffer-vault/v1/head-row"), recordKey ‖ slotID)`.
    func headRowID(recordKey: Data, slotID: Data) -> Data {
        Data(HMAC<SHA256>.authenticationCode(for: recordKey + slotID,
                                             using: Self.hkdf(storageKey, info: Array("coffer-vault/v1/head-row".utf8))))
    }

    static func be64(_ v: Int64) -> Data {
        withUnsafeBytes(of: v.bigEndian) { Data($0) }
    }
}

enum StoreError: Error, CustomStringConvertible {
    case corrupt
    var description: String { "a stored value failed authentication (database altered or wrong key file)" }
}
