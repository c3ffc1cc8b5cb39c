import CofferCore
import CofferVault
import Crypto
import CryptoExtras
import Foundation
import Synchronization

/// A record as a transaction read it: its generation (for the compare-and-swap) and its contents.
struct RecordRow {
    var gen: Int64
    var record: StoredRecord
}

/// A ticket row as stored (its sealed value is non-nil once spent).
struct TicketRow {
    var record: Data
    var scope: String
    var expires: Double
    var sealed: Data?

    /// ``RealmRules/ticketAdmits(record:scope:expires:recordKey:scope:at:)`` for this row.
    func admits(recordKey rk: Data, scope wanted: VaultScope, at t: Double) -> Bool {
        RealmRules.ticketAdmits(record: record, scope: scope, expires: expires, recordKey: rk, scope: wanted, at: t)
    }
}

/// The realm's rules, written once for both stores (``RealmStore`` on SQLite, `PostgresRealmStore`):
/// the cryptography (VOPRF evaluations, unlock and replace proofs, the realm-side seals of each
/// table) and every decision (is this ticket good, is this proof right, how many guesses are left,
/// is the record due for destruction, may this registration replace that record, may this head
/// write land). Nothing here reads or writes a database: each store keeps its SQL, its transactions
/// and the order of its reads and writes (a guess is durable before its answer), and asks these
/// functions at each step (docs/REALM.md, "Guess accounting, as built").
enum RealmRules {
    // MARK: ids and randomness

    /// Row id of a ticket, challenge or pending registration: SHA-256 of the value (the database never
    /// holds the value itself); also the stored hash of a head's write authenticator and of an unlock proof.
    static func sha256(_ d: Data) -> Data { Data(SHA256.hash(data: d)) }

    /// `n` bytes from the system's CSPRNG (tickets, challenges, pending ids).
    static func random(_ n: Int) -> Data {
        var g = SystemRandomNumberGenerator()
        return Data((0..<n).map { _ in UInt8.random(in: 0...255, using: &g) })
    }

    /// Whether a ticket may be used by the user `rk` for `wanted` at `t`: the user's, of that scope,
    /// unexpired (spent or not: the caller decides what a spent one means). Anything else is
    /// `badTicket`, refused before any curve operation or write.
    static func ticketAdmits(record: Data, scope: String, expires: Double, recordKey rk: Data, scope wanted: VaultScope, at t: Double) -> Bool {
        record == rk && scope == wanted.rawValue && expires > t
    }

    // MARK: records and guesses left

    /// What Q0 reports for a record (or none).
    static func status(of record: StoredRecord?) -> RecordStatus {
        guard let r = record else { return .notRegistered }
        switch r.kind {
        case .destroyed: return .locked(version: r.version)
        case .active:
            return .active(version: r.version, policy: r.policy, commitment: r.commitment, vk: r.vk,
                           attemptsLeft: attemptsLeft(r))
        }
    }

    /// Guesses left in this epoch.
    static func attemptsLeft(_ r: StoredRecord) -> Int { max(0, r.guessLimit - r.attempts) }

    /// The destruction rule's part about the record: an active record at `L` attempts is destroyed
    /// as soon as none of its challenges is live (which only the store can tell).
    static func destructionDue(_ r: StoredRecord) -> Bool { r.kind == .active && r.attempts >= r.guessLimit }

    /// Why Q1 or Q2 naming `version` cannot be answered from this record, if it cannot: a
    /// tombstone answers *locked* first, then another version `versionMismatch`.
    static func refusal(answering r: StoredRecord, version: Data) -> RealmRefusal? {
        guard r.kind == .active else { return .locked }
        guard r.version == version else { return .versionMismatch }
        return nil
    }

    // MARK: Q1 (guess)

    /// A VOPRF evaluation of a blinded element (RFC 9497 P384-SHA384).
    struct Evaluation: Sendable {
        var element: Data
        var proof: Data
    }

    /// Q1's evaluation, run on a snapshot before the transaction (it is the expensive part): only
    /// for an unspent ticket and an active record of the version asked (else none, and the
    /// transaction decides: the stored answer of a spent ticket, or a refusal). An invalid blinded
    /// element is refused before any curve operation with the key; `counter` counts each evaluation.
    static func evaluateGuess(blinded: Data, version: Data, ticketUnspent: Bool, snapshot: StoredRecord?, recordKey rk: Data,
                              keys: OPRFKeyCache, counter: borrowing Atomic<Int>) throws -> Evaluation? {
        guard ticketUnspent, let snap = snapshot, snap.kind == .active, snap.version == version else { return nil }
        let element = try blindedElement(blinded)
        let key = try keys.key(recordKey: rk, raw: snap.oprfKey)
        counter.add(1, ordering: .relaxed)
        let e = try key.evaluate(element)
        return Evaluation(element: e.evaluatedElement.oprfRepresentation, proof: e.proof.rawRepresentation)
    }

    static func blindedElement(_ blinded: Data) throws(RealmRefusal) -> P384._VOPRF.BlindedElement {
        do { return try P384._VOPRF.BlindedElement(oprfRepresentation: blinded) } catch { throw .badElement }
    }

    /// A guess as it is counted: the record with one more attempt, its challenge's expiry, the
    /// record's `lockAt` (set while the last guess of the epoch is in flight) and the answer.
    struct CountedGuess {
        var record: StoredRecord
        /// This guess is the epoch's `L`-th.
        var last: Bool
        var challengeExpires: Double
        var lockAt: Double? { last ? challengeExpires : nil }
        var answer: GuessAnswer
    }

    /// Counts a guess against `record` (read inside the transaction, or as the snapshot the
    /// PostgreSQL store's one-statement guess writes by compare-and-swap): refused on a tombstone
    /// (`locked`), another version, a record at `L` (`noGuessesLeft`), or without an evaluation
    /// (the record was registered again after the snapshot: `versionMismatch`, nothing spent).
    static func countGuess(_ record: StoredRecord, version: Data, evaluation: Evaluation?, challenge: Data, at t: Double,
                           limits: RealmStore.Limits) throws(RealmRefusal) -> CountedGuess {
        if let refusal = refusal(answering: record, version: version) { throw refusal }
        guard record.attempts < record.guessLimit else { throw .noGuessesLeft }
        // Registered between the snapshot and now (same version is astronomically unlikely):
        // refuse without spending; the client retries with a fresh Q0.
        guard let evaluation else { throw .versionMismatch }
        var record = record
        record.attempts += 1
        let answer = GuessAnswer(evaluatedElement: evaluation.element, proof: evaluation.proof, pk: record.pk, c: record.c,
                                 sig: record.sig, challenge: challenge, attemptsLeft: record.guessLimit - record.attempts)
        return CountedGuess(record: record, last: record.attempts >= record.guessLimit,
                            challengeExpires: t + limits.challengeLifetime, answer: answer)
    }

    /// A spent `recover` ticket: a retry with the byte-identical blinded element (compared in
    /// constant time) gets the stored answer again, without another guess; anything else `ticketReused`.
    static func storedGuess(_ sealed: Data, blinded: Data, ticketID tid: Data, recordKey rk: Data, crypto: RecordCrypto) throws -> GuessAnswer {
        let plain = try crypto.openSide(sealed, table: "ticket", rowID: tid, recordKey: rk)
        guard let (storedBlinded, answer) = decodeStoredGuess(plain) else { throw StoreError.corrupt }
        guard constantTimeEqual(storedBlinded, blinded) else { throw RealmRefusal.ticketReused }
        return answer
    }

    /// The sealed value that spends a `recover` ticket: the blinded element and the answer (for an identical retry).
    static func sealGuess(_ blinded: Data, _ answer: GuessAnswer, ticketID tid: Data, recordKey rk: Data, crypto: RecordCrypto) throws -> Data {
        try crypto.sealSide(encodeStoredGuess(blinded, answer), table: "ticket", rowID: tid, recordKey: rk)
    }

    /// The sealed value that spends a `delete` or `head` ticket.
    static func sealSpentTicket(ticketID tid: Data, recordKey rk: Data, crypto: RecordCrypto) throws -> Data {
        try crypto.sealSide([0], table: "ticket", rowID: tid, recordKey: rk)
    }

    static func encodeStoredGuess(_ blinded: Data, _ a: GuessAnswer) -> [UInt8] {
        lpJoin([blinded, a.evaluatedElement, a.proof, a.pk, a.c, a.sig, a.challenge, Data([UInt8(clamping: a.attemptsLeft)])])
    }

    static func decodeStoredGuess(_ bytes: [UInt8]) -> (Data, GuessAnswer)? {
        var r = ByteReader(bytes)
        var f: [Data] = []
        for _ in 0..<8 {
            guard let d = r.lp16() else { return nil }
            f.append(Data(d))
        }
        guard r.atEnd, f[7].count == 1 else { return nil }
        return (f[0], GuessAnswer(evaluatedElement: f[1], proof: f[2], pk: f[3], c: f[4], sig: f[5], challenge: f[6],
                                  attemptsLeft: Int(f[7][f[7].startIndex])))
    }

    // MARK: Q2 (unlock)

    /// Whether `proof` is `HMAC(tag, "coffer-vault/v1/unlock-proof" ‖ realmID ‖ version ‖ challenge)`,
    /// compared in constant time.
    static func unlockProofValid(_ proof: Data, tag: Data, realmID: Data, version: Data, challenge: Data) -> Bool {
        let expected = Data(HMAC<SHA256>.authenticationCode(
            for: Array("coffer-vault/v1/unlock-proof".utf8) + Array(realmID) + Array(version) + Array(challenge),
            using: SymmetricKey(data: tag)))
        return constantTimeEqual(expected, proof)
    }

    /// What a spent challenge keeps until it expires: `SHA-256(proof) ‖ outcome` (1 unlocked, 0 wrong).
    static func spentChallenge(proofHash: Data, success: Bool) -> Data { proofHash + Data([success ? 1 : 0]) }

    /// Q2 on a spent challenge: a byte-identical retry (its answer was lost; the proof's hash
    /// compared in constant time) gets the same outcome again and changes nothing; any other proof
    /// gets nothing (`noChallenge`).
    static func retriedUnlock(spent stored: Data, proofHash: Data, record: StoredRecord) -> Result<UnlockOutcome, RealmRefusal> {
        guard stored.count == 33, constantTimeEqual(Data(stored.prefix(32)), proofHash) else { return .failure(.noChallenge) }
        if stored.last == 1 { return .success(.unlocked(wrapped: record.wrapped)) }
        return .success(.wrongProof(attemptsLeft: attemptsLeft(record)))
    }

    /// The record after a successful unlock: the epoch ends, the count starts again.
    static func unlocked(_ record: StoredRecord) -> StoredRecord {
        var r = record
        r.attempts = 0
        return r
    }

    // MARK: R1 and R2 (registration)

    /// R1's key and evaluation: a fresh VOPRF key, its evaluation of `blinded` (an invalid element is
    /// refused before the key is made) and a fresh pending id. The caller seals the key
    /// (``sealPendingKey(_:pendingRowID:recordKey:crypto:)``) and stores it under `rowID`.
    static func beginRegistration(blinded: Data, counter: borrowing Atomic<Int>) throws
        -> (answer: PendingAnswer, keyBytes: [UInt8], rowID: Data) {
        let element = try blindedElement(blinded)
        let key = P384._VOPRF.PrivateKey()
        counter.add(1, ordering: .relaxed)
        let e = try key.evaluate(element)
        let pendingID = random(16)
        let answer = PendingAnswer(pendingID: pendingID, evaluatedElement: e.evaluatedElement.oprfRepresentation,
                                   proof: e.proof.rawRepresentation, pk: key.publicKey.oprfRepresentation)
        return (answer, Array(key.rawRepresentation), sha256(pendingID))
    }

    static func sealPendingKey(_ keyBytes: [UInt8], pendingRowID pid: Data, recordKey rk: Data, crypto: RecordCrypto) throws -> Data {
        try crypto.sealSide(keyBytes, table: "pending", rowID: pid, recordKey: rk)
    }

    static func openPendingKey(_ sealed: Data, pendingRowID pid: Data, recordKey rk: Data, crypto: RecordCrypto) throws -> [UInt8] {
        try crypto.openSide(sealed, table: "pending", rowID: pid, recordKey: rk)
    }

    /// Whether a pending row may be spent by the user `rk` at `t` (the user's and unexpired).
    static func pendingValid(record: Data, expires: Double, recordKey rk: Data, at t: Double) -> Bool {
        record == rk && expires > t
    }

    /// R2's decision about the record it would replace (`current`, read in the transaction), and the
    /// `resets` the new record carries. Over none: only with no `expectedVersion`. Over an active
    /// record: its version, and either a valid replace proof (the current password) or a
    /// `reset`-scoped token, which is counted; else `replaceNotProven`. Over a tombstone: no
    /// `expectedVersion` or the tombstone's version (whoever still holds `K` may enable again).
    static func replacement(of current: StoredRecord?, expectedVersion: Data?, newVersion: Data,
                            replace: RealmStore.ReplaceAuthority, realmID: Data, pendingID: Data) throws(RealmRefusal)
        -> (outcome: RealmStore.RegistrationOutcome, resets: Int) {
        switch current?.kind {
        case nil:
            guard expectedVersion == nil else { throw .versionMismatch }
            return (.fresh, 0)
        case .active:
            guard let cur = current, expectedVersion == cur.version else { throw .versionMismatch }
            // Replacing a live registration needs the current password (a proof keyed by its
            // stored unlock tag, bound to this realm, both versions and this pending id) or an
            // explicit, counted reset.
            if verifyReplaceProof(replace.proof, record: cur, realmID: realmID, newVersion: newVersion, pendingID: pendingID) {
                return (.proven, cur.resets)
            } else if replace.reset {
                return (.reset(count: cur.resets + 1), cur.resets + 1)
            } else {
                throw .replaceNotProven
            }
        case .destroyed:
            // A destroyed record may be replaced by whoever still holds K: Q0 reported it
            // locked with its version; "none" is accepted too.
            guard expectedVersion == nil || expectedVersion == current?.version else { throw .versionMismatch }
            return (.fresh, 0)
        }
    }

    /// The record R2 writes: the new fields, this realm's `x`, the pending key and its public key.
    static func registeredRecord(_ fields: RegistrationFields, oprfKey: [UInt8], x: UInt8, replacing current: StoredRecord?,
                                 resets: Int) throws -> StoredRecord {
        let key = try P384._VOPRF.PrivateKey(rawRepresentation: oprfKey)
        // Guesses this realm counted against the record it replaces carry over: a registration
        // (a repair, a rotation that reached this realm late, a change, a reset) never hands out a fresh
        // budget for guesses an attacker already spent here. Only a successful unlock (Q2)
        // resets the count. A tombstone may be replaced (the device still holds K), but the
        // client never does so in a repair (docs/VAULT.md, "Guess accounting").
        let inherited = current?.kind == .active ? min(current?.attempts ?? 0, fields.guessLimit) : 0
        return StoredRecord(kind: .active, version: fields.version, oprfKey: Data(oprfKey), x: x,
                            pk: key.publicKey.oprfRepresentation, c: fields.c, commitment: fields.commitment,
                            vk: fields.vk, sig: fields.sig, tag: fields.tag, wrapped: fields.wrapped,
                            policy: fields.policy, attempts: inherited, guessLimit: fields.guessLimit, resets: resets)
    }

    /// R2's replace proof against the stored unlock tag, in constant time (an all-zero or malformed proof is none).
    static func verifyReplaceProof(_ proof: Data, record: StoredRecord, realmID: Data, newVersion: Data, pendingID: Data) -> Bool {
        guard proof.count == WireSize.replaceProof, proof.contains(where: { $0 != 0 }), record.tag.count == WireSize.unlockTag,
              let rid = try? RealmID(bytes: Array(realmID)), let cur = try? RecordVersion(bytes: Array(record.version)),
              let new = try? RecordVersion(bytes: Array(newVersion)), let pid = try? PendingID(bytes: Array(pendingID))
        else { return false }
        return VaultDerivation.verifyReplaceProof(Array(proof), tag: Array(record.tag), realmID: rid, currentVersion: cur,
                                                  newVersion: new, pendingID: pid)
    }

    // MARK: anchored heads

    /// A head write's values, derived alike by both stores: the ticket's row id, the slot's keyed
    /// row id and the row to store (with SHA-256 of the write authenticator, never the authenticator).
    struct HeadWrite: Sendable {
        var ticketID: Data
        var rowID: Data
        var head: HeadRow

        init(recordKey rk: Data, ticket: Data, slotID: Data, seq: UInt64, writeAuth: Data, sealedHead: Data, crypto: RecordCrypto) {
            ticketID = RealmRules.sha256(ticket)
            rowID = crypto.headRowID(recordKey: rk, slotID: slotID)
            head = HeadRow(slotID: slotID, seq: seq, authHash: RealmRules.sha256(writeAuth), sealedHead: sealedHead)
        }
    }

    /// A head write to an existing slot: refused unless the write authenticator's hash matches the
    /// slot's (constant time); the same seq with byte-identical contents is a retry (false: nothing
    /// to write); otherwise refused unless `seq` is higher (true: write).
    static func acceptHeadWrite(_ new: HeadRow, over stored: HeadRow) throws(HeadRefusal) -> Bool {
        guard constantTimeEqual(stored.authHash, new.authHash) else { throw .authFailed }
        // An identical retry: nothing to change but the ticket.
        if new.seq == stored.seq, stored.sealedHead == new.sealedHead { return false }
        guard new.seq > stored.seq else { throw .stale(stored: stored.seq) }
        return true
    }

    /// A new slot when the user already has `count` slots: whether it needs room. When full, only a
    /// slot not written since ``headIdleBefore(_:limits:)`` makes room, and is replaced (so garbage
    /// written by a token holder can block new slots for a while, never evict a live one);
    /// without one the write is refused (`tooManySlots`).
    static func headSlotsFull(_ count: Int) -> Bool { count >= HeadWire.maxSlots }

    /// The time before which a slot counts as idle (`Limits.headSlotIdleLifetime` ago).
    static func headIdleBefore(_ t: Double, limits: RealmStore.Limits) -> Double { t - limits.headSlotIdleLifetime }

    static func sealHead(_ head: HeadRow, rowID: Data, recordKey rk: Data, crypto: RecordCrypto) throws -> Data {
        try crypto.sealSide(head.encoded(), table: "head", rowID: rowID, recordKey: rk)
    }

    static func openHead(_ sealed: Data, rowID: Data, recordKey rk: Data, crypto: RecordCrypto) throws -> HeadRow {
        let plain = try crypto.openSide(sealed, table: "head", rowID: rowID, recordKey: rk)
        guard let h = HeadRow(decoding: plain) else { throw StoreError.corrupt }
        return h
    }

    /// A head read's answer: the slots, by slot id.
    static func storedHeads(_ rows: [HeadRow]) -> [StoredHead] {
        rows.sorted { $0.slotID.lexicographicallyPrecedes($1.slotID) }
            .map { StoredHead(slotID: Array($0.slotID), seq: $0.seq, sealedHead: Array($0.sealedHead)) }
    }
}
