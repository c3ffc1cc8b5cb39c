import CofferVault
import Crypto
import Foundation
import GRDB
import CofferCore

/// Why a head write was refused; each is answered sealed and changes nothing (the ticket stays unspent).
public enum HeadRefusal: Error, Sendable, Equatable, CustomStringConvertible {
    /// Unknown, expired, foreign or wrong-scope ticket.
    case badTicket
    /// The ticket was already spent.
    case ticketReused
    /// The slot holds a higher seq, or the same seq with other bytes.
    case stale(stored: UInt64)
    /// The user already has `HeadWire.maxSlots` slots.
    case tooManySlots
    /// The write authenticator does not match the one the slot was created with.
    case authFailed

    public var description: String {
        switch self {
        case .badTicket: return "unknown or expired ticket"
        case .ticketReused: return "ticket already used"
        case .stale(let s): return "the slot holds seq \(s) or a different head at this seq"
        case .tooManySlots: return "too many head slots"
        case .authFailed: return "write authenticator mismatch"
        }
    }
}

/// One slot as stored (inside the row's seal): slotID ‖ seq ‖ SHA-256(writeAuth) ‖ sealed head.
struct HeadRow {
    var slotID: Data
    var seq: UInt64
    var authHash: Data
    var sealedHead: Data

    func encoded() -> [UInt8] {
        var w = ByteWriter(capacity: slotID.count + 8 + authHash.count + sealedHead.count)
        w.raw(slotID)
        w.u64(seq)
        w.raw(authHash)
        w.raw(sealedHead)
        return w.bytes
    }

    init(slotID: Data, seq: UInt64, authHash: Data, sealedHead: Data) {
        self.slotID = slotID
        self.seq = seq
        self.authHash = authHash
        self.sealedHead = sealedHead
    }

    init?(decoding b: [UInt8]) {
        let s = HeadWire.slotID
        guard b.count == s + 8 + 32 + HeadWire.sealedHead else { return nil }
        var r = ByteReader(b)
        guard let slot = r.take(s), let seq = r.u64(), let auth = r.take(32), let head = r.take(HeadWire.sealedHead) else { return nil }
        (slotID, self.seq, authHash, sealedHead) = (Data(slot), seq, Data(auth), Data(head))
    }
}

extension RealmStore {
    /// Head read: a fresh `head`-scoped ticket (durable before it is returned, 5 minutes) and every
    /// slot this user has, opened from the realm's seal.
    public func readHeads(tenant: String, user: String) async throws -> (ticket: Data, heads: [StoredHead]) {
        let rk = recordKey(tenant: tenant, user: user)
        let ticket = RealmRules.random(32)
        let t = now().timeIntervalSince1970
        let life = limits.ticketLifetime
        let tid = RealmRules.sha256(ticket)
        let rows = try await group.write { db -> [HeadRow] in
            try db.execute(sql: "INSERT INTO ticket (id, record, scope, expires, sealed) VALUES (?, ?, ?, ?, NULL)",
                           arguments: [tid, rk, VaultScope.head.rawValue, t + life])
            var out: [HeadRow] = []
            for row in try Row.fetchAll(db, sql: "SELECT id, sealed FROM head WHERE record = ?", arguments: [rk]) {
                out.append(try RealmRules.openHead(row["sealed"], rowID: row["id"], recordKey: rk, crypto: self.crypto))
            }
            return out
        }
        return (ticket, RealmRules.storedHeads(rows))
    }

    /// Head write, in one durable transaction: spends the `head` ticket, then stores the sealed head
    /// in its slot if the slot is new (and the user has fewer than `HeadWire.maxSlots`, or one of
    /// them has not been written for `Limits.headSlotIdleLifetime`, which it replaces), or its
    /// write authenticator matches and `seq` is higher than the stored one (the same seq with
    /// byte-identical contents is accepted again: a retry). Returns the seq now stored.
    public func writeHead(tenant: String, user: String, ticket: Data, slotID: Data, seq: UInt64,
                          writeAuth: Data, sealedHead: Data) async throws -> UInt64 {
        let rk = recordKey(tenant: tenant, user: user)
        let w = RealmRules.HeadWrite(recordKey: rk, ticket: ticket, slotID: slotID, seq: seq, writeAuth: writeAuth,
                                     sealedHead: sealedHead, crypto: crypto)
        let (tid, rowID, head) = (w.ticketID, w.rowID, w.head)
        let t = now().timeIntervalSince1970
        let idleBefore = RealmRules.headIdleBefore(t, limits: limits)
        return try await group.write { db in
            guard let tr = try self.loadTicket(db, tid), tr.admits(recordKey: rk, scope: .head, at: t) else { throw HeadRefusal.badTicket }
            guard tr.sealed == nil else { throw HeadRefusal.ticketReused }
            if let row = try Row.fetchOne(db, sql: "SELECT sealed FROM head WHERE id = ?", arguments: [rowID]) {
                let stored = try RealmRules.openHead(row["sealed"], rowID: rowID, recordKey: rk, crypto: self.crypto)
                if try RealmRules.acceptHeadWrite(head, over: stored) {
                    let sealed = try RealmRules.sealHead(head, rowID: rowID, recordKey: rk, crypto: self.crypto)
                    try db.execute(sql: "UPDATE head SET updated = ?, sealed = ? WHERE id = ?", arguments: [t, sealed, rowID])
                }
            } else {
                let count = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM head WHERE record = ?", arguments: [rk]) ?? 0
                if RealmRules.headSlotsFull(count) {
                    guard let idle = try Data.fetchOne(db, sql: "SELECT id FROM head WHERE record = ? AND updated < ? ORDER BY updated LIMIT 1",
                                                       arguments: [rk, idleBefore]) else { throw HeadRefusal.tooManySlots }
                    try db.execute(sql: "DELETE FROM head WHERE id = ?", arguments: [idle])
                }
                let sealed = try RealmRules.sealHead(head, rowID: rowID, recordKey: rk, crypto: self.crypto)
                try db.execute(sql: "INSERT INTO head (id, record, updated, sealed) VALUES (?, ?, ?, ?)", arguments: [rowID, rk, t, sealed])
            }
            // Spent in the same transaction as the write.
            try db.execute(sql: "UPDATE ticket SET sealed = ? WHERE id = ?",
                           arguments: [try RealmRules.sealSpentTicket(ticketID: tid, recordKey: rk, crypto: self.crypto), tid])
            return seq
        }
    }
}
