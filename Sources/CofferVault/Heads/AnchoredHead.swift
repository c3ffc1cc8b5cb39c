#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Crypto
import CofferCore

/// A backup head anchored in the vault realms: the newest snapshot one writer made in one
/// repository. Sealed and authenticated under a key derived from the backup key `K`, so a realm
/// learns nothing about it and cannot forge one (`docs/VAULT.md`, "Anchored backup heads").
public struct AnchoredHead: Sendable, Hashable {
    /// The repository id (16 bytes).
    public var repositoryID: [UInt8]
    /// The writer (device) id (16 bytes).
    public var writerID: [UInt8]
    /// The writer's snapshot sequence number.
    public var seq: UInt64
    /// The snapshot object's id (32 bytes: the hash that names it).
    public var snapshotID: [UInt8]
    /// When the snapshot was made (milliseconds are kept).
    public var time: Date

    public init(repositoryID: [UInt8], writerID: [UInt8], seq: UInt64, snapshotID: [UInt8], time: Date) {
        self.repositoryID = repositoryID
        self.writerID = writerID
        self.seq = seq
        self.snapshotID = snapshotID
        self.time = Date(timeIntervalSince1970: (time.timeIntervalSince1970 * 1000).rounded() / 1000)
    }

    /// From the hex forms the backup engine uses (32, 32 and 64 hex digits); `nil` if malformed.
    public init?(repositoryIDHex: String, writerIDHex: String, seq: UInt64, snapshotIDHex: String, time: Date) {
        guard let r = [UInt8](hexString: repositoryIDHex), r.count == 16,
              let w = [UInt8](hexString: writerIDHex), w.count == 16,
              let s = [UInt8](hexString: snapshotIDHex), s.count == 32 else { return nil }
        self.init(repositoryID: r, writerID: w, seq: seq, snapshotID: s, time: time)
    }

    public var repositoryIDHex: String { repositoryID.hexString }
    public var writerIDHex: String { writerID.hexString }
    public var snapshotIDHex: String { snapshotID.hexString }

    static let format: UInt8 = 1

    /// format(1) ‖ repositoryID(16) ‖ writerID(16) ‖ seq(8) ‖ snapshotID(32) ‖ time ms(8), big-endian.
    var plaintext: [UInt8] {
        var w = WireWriter()
        w.u8(Self.format)
        w.raw(repositoryID)
        w.raw(writerID)
        w.u64(seq)
        w.raw(snapshotID)
        w.u64(UInt64(bitPattern: Int64((time.timeIntervalSince1970 * 1000).rounded())))
        return w.bytes
    }

    static func decode(_ bytes: [UInt8]) -> AnchoredHead? {
        guard bytes.count == HeadWire.headPlaintext else { return nil }
        var r = WireReader(bytes)
        guard (try? r.byte("format")) == format,
              let repo = try? r.fixed(16, "repository id"), let writer = try? r.fixed(16, "writer id"),
              let seq = try? r.uint64("seq"), let snap = try? r.fixed(32, "snapshot id"),
              let ms = try? r.uint64("time") else { return nil }
        return AnchoredHead(repositoryID: repo, writerID: writer, seq: seq, snapshotID: snap,
                            time: Date(timeIntervalSince1970: Double(Int64(bitPattern: ms)) / 1000))
    }
}

/// The derivations of the anchored heads, all from `K` with their own labels (HKDF-SHA256, empty
/// salt: heads are per account, across repositories, so the repository id goes into the slot id
/// and the sealed plaintext instead of the salt).
public struct HeadKeys: Sendable {
    public static let sealLabel = Array("coffer/v1/vault-head-seal".utf8)
    public static let slotLabel = Array("coffer/v1/vault-head-slot".utf8)
    public static let authLabel = Array("coffer/v1/vault-head-auth".utf8)
    public static let nonceLabel = Array("coffer/v1/vault-head-nonce".utf8)
    /// AAD prefix of a sealed head (then the slot id).
    public static let aadLabel = Array("coffer/v1/vault-head".utf8)

    let seal: SymmetricKey
    let slot: SymmetricKey
    let auth: SymmetricKey
    let nonce: SymmetricKey

    public init(key: BackupKey) {
        func derive(_ info: [UInt8]) -> SymmetricKey {
            HKDF<SHA256>.deriveKey(inputKeyMaterial: key.symmetricKey, salt: [UInt8](), info: info, outputByteCount: 32)
        }
        seal = derive(Self.sealLabel)
        slot = derive(Self.slotLabel)
        auth = derive(Self.authLabel)
        nonce = derive(Self.nonceLabel)
    }

    /// `HMAC(K_slot, repositoryID ‖ writerID)[0..<16]`: where a head is stored, opaque to the realm.
    public func slotID(repositoryID: [UInt8], writerID: [UInt8]) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: repositoryID + writerID, using: slot)).prefix(HeadWire.slotID).map { $0 }
    }

    /// `HMAC(K_auth, realmID ‖ slotID)`: proves to realm `realmID` that the writer holds `K`.
    public func writeAuth(realmID: RealmID, slotID: [UInt8]) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: realmID.bytes + slotID, using: auth))
    }

    /// `nonce(12) ‖ AES-256-GCM(K_seal, plaintext, aad: "coffer/v1/vault-head" ‖ slotID)` with
    /// `nonce = HMAC(K_nonce, plaintext)[0..<12]`: deterministic, so storing the same head again
    /// sends the same bytes (a realm accepts an identical retry at the same seq), and two different
    /// heads get the same nonce only with probability 2^-96 per pair.
    public func seal(_ head: AnchoredHead) throws -> (slotID: [UInt8], sealed: [UInt8]) {
        let slot = slotID(repositoryID: head.repositoryID, writerID: head.writerID)
        let plain = head.plaintext
        let n = try AES.GCM.Nonce(data: Array(HMAC<SHA256>.authenticationCode(for: plain, using: nonce)).prefix(12))
        let box = try AES.GCM.seal(plain, using: seal, nonce: n, authenticating: Self.aadLabel + slot)
        return (slot, Array(n) + Array(box.ciphertext) + Array(box.tag))
    }

    /// Opens a listed head: `nil` unless it authenticates under this key, belongs to `slotID`, and
    /// names the repository and writer that slot id is derived from.
    public func open(slotID: [UInt8], sealed: [UInt8]) -> AnchoredHead? {
        guard slotID.count == HeadWire.slotID, sealed.count == HeadWire.sealedHead,
              let box = try? AES.GCM.SealedBox(nonce: AES.GCM.Nonce(data: sealed[0..<12]),
                                               ciphertext: sealed[12..<(sealed.count - 16)], tag: sealed[(sealed.count - 16)...]),
              let plain = try? AES.GCM.open(box, using: seal, authenticating: Self.aadLabel + slotID),
              let head = AnchoredHead.decode(Array(plain)) else { return nil }
        let expected = self.slotID(repositoryID: head.repositoryID, writerID: head.writerID)
        guard constantTimeEqual(expected, slotID) else { return nil }
        return head
    }
}

