#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Sizes and limits of the anchored-head messages (`docs/VAULT.md`, "Anchored backup heads").
public enum HeadWire {
    /// Opaque slot id: `HMAC(K_slot, repositoryID ‖ writerID)` truncated to 16 bytes.
    public static let slotID = 16
    /// The write authenticator a realm binds a slot to at its first write (`HMAC(K_auth, realmID ‖ slotID)`).
    public static let writeAuth = 32
    /// Head plaintext: format(1) ‖ repositoryID(16) ‖ writerID(16) ‖ seq(8) ‖ snapshotID(32) ‖ time ms(8).
    public static let headPlaintext = 81
    /// Sealed head: nonce(12) ‖ AES-256-GCM ciphertext(81) ‖ tag(16).
    public static let sealedHead = 12 + headPlaintext + 16
    /// Most slots (repository × writer pairs) a realm keeps per user.
    public static let maxSlots = 16
    /// One listed slot: slotID ‖ seq(8) ‖ sealed head.
    static let entry = slotID + 8 + sealedHead
    /// Every head-read answer (success or error) is padded to this size: type, ticket, count and
    /// `maxSlots` entries fit.
    public static let readAnswerPaddedSize = 2304
}

/// Head read `{token}` (scope `head`): the user's stored heads and a fresh single-use ticket.
public struct HeadReadRequest: Sendable, Equatable {
    public var token: String
    public init(token: String) { self.token = token }
}

/// Head write `{token, ticket, slotID, seq, writeAuth, sealedHead}` (scope `head`).
///
/// `seq` travels in clear inside the HPKE-sealed body so the realm can refuse a lower one; the
/// realm learns no more from it than it learns by counting writes.
public struct HeadWriteRequest: Sendable, Equatable {
    public var token: String
    /// From a head read of this realm just before (single use, 5 minutes).
    public var ticket: Ticket
    public var slotID: [UInt8]
    public var seq: UInt64
    /// `HMAC(K_auth, realmID ‖ slotID)`: the realm keeps its SHA-256 at the slot's first write and
    /// refuses later writes that do not match (a token holder without `K` cannot overwrite a slot).
    public var writeAuth: [UInt8]
    public var sealedHead: [UInt8]

    public init(token: String, ticket: Ticket, slotID: [UInt8], seq: UInt64, writeAuth: [UInt8], sealedHead: [UInt8]) {
        self.token = token
        self.ticket = ticket
        self.slotID = slotID
        self.seq = seq
        self.writeAuth = writeAuth
        self.sealedHead = sealedHead
    }

    func encodeFields(into w: inout WireWriter) throws(WireError) {
        guard slotID.count == HeadWire.slotID else { throw .invalidValue(field: "slot id length") }
        guard writeAuth.count == HeadWire.writeAuth else { throw .invalidValue(field: "write authenticator length") }
        guard sealedHead.count == HeadWire.sealedHead else { throw .invalidValue(field: "sealed head length") }
        w.raw(ticket.bytes)
        w.raw(slotID)
        w.u64(seq)
        w.raw(writeAuth)
        w.raw(sealedHead)
    }

    static func decodeFields(token: String, _ r: inout WireReader) throws(WireError) -> HeadWriteRequest {
        HeadWriteRequest(token: token, ticket: try Ticket.read(&r, "ticket"),
                         slotID: try r.fixed(HeadWire.slotID, "slot id"),
                         seq: try r.uint64("seq"),
                         writeAuth: try r.fixed(HeadWire.writeAuth, "write authenticator"),
                         sealedHead: try r.fixed(HeadWire.sealedHead, "sealed head"))
    }
}

/// One slot as a realm lists it: opaque to the realm, opened and checked by the client.
public struct StoredHead: Sendable, Equatable {
    public var slotID: [UInt8]
    /// The seq the realm stored with it (the client trusts only the seq inside the sealed head).
    public var seq: UInt64
    public var sealedHead: [UInt8]
    public init(slotID: [UInt8], seq: UInt64, sealedHead: [UInt8]) {
        self.slotID = slotID
        self.seq = seq
        self.sealedHead = sealedHead
    }
}

/// Head read's answer: `ticket(32) ‖ count(1) ‖ count × (slotID(16) ‖ seq(8) ‖ sealedHead(109))`.
public struct HeadReadAnswer: Sendable, Equatable {
    public var ticket: Ticket
    public var heads: [StoredHead]
    public init(ticket: Ticket, heads: [StoredHead]) {
        self.ticket = ticket
        self.heads = heads
    }

    func encodeFields(into w: inout WireWriter) throws(WireError) {
        guard heads.count <= HeadWire.maxSlots else { throw .oversize(field: "heads", length: heads.count) }
        w.raw(ticket.bytes)
        w.u8(UInt8(heads.count))
        for h in heads {
            guard h.slotID.count == HeadWire.slotID, h.sealedHead.count == HeadWire.sealedHead else {
                throw .invalidValue(field: "stored head length")
            }
            w.raw(h.slotID)
            w.u64(h.seq)
            w.raw(h.sealedHead)
        }
    }

    static func decodeFields(_ r: inout WireReader) throws(WireError) -> HeadReadAnswer {
        let ticket = try Ticket.read(&r, "ticket")
        let count = Int(try r.byte("head count"))
        guard count <= HeadWire.maxSlots else { throw .invalidValue(field: "head count") }
        var heads: [StoredHead] = []
        for _ in 0..<count {
            heads.append(StoredHead(slotID: try r.fixed(HeadWire.slotID, "slot id"), seq: try r.uint64("seq"),
                                    sealedHead: try r.fixed(HeadWire.sealedHead, "sealed head")))
        }
        return HeadReadAnswer(ticket: ticket, heads: heads)
    }
}

/// Head write's answer: the seq now stored for the slot.
public struct HeadWriteAnswer: Sendable, Equatable {
    public var seq: UInt64
    public init(seq: UInt64) { self.seq = seq }
}
