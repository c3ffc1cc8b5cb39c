import CofferVault
import Crypto
import CryptoExtras
import Foundation
import GRDB
import Synchronization
import CofferCore

/// What Q0 learns about a user's record.
public enum RecordStatus: Sendable, Equatable {
    case notRegistered
    /// Destroyed after too many wrong guesses (a tombstone keeps the version).
    case locked(version: Data)
    case active(version: Data, policy: Data, commitment: Data, vk: Data, attemptsLeft: Int)
}

/// Q1's answer (also stored with its ticket, so an identical retry gets it again).
public struct GuessAnswer: Sendable, Equatable {
    public var evaluatedElement: Data
    public var proof: Data
    public var pk: Data
    public var c: Data
    public var sig: Data
    public var challenge: Data
    public var attemptsLeft: Int
}

/// Q2's outcome.
public enum UnlockOutcome: Sendable, Equatable {
    case unlocked(wrapped: Data)
    case wrongProof(attemptsLeft: Int)
    /// The record was destroyed (now, or by this request's spent last challenge).
    case destroyed
}

/// R1's answer.
public struct PendingAnswer: Sendable, Equatable {
    public var pendingID: Data
    public var evaluatedElement: Data
    public var proof: Data
    public var pk: Data
}

/// What R2 stores (the client-computed fields of a registration).
public struct RegistrationFields: Sendable {
    public var version: Data
    public var c: Data
    public var commitment: Data
    public var vk: Data
    public var sig: Data
    public var tag: Data
    public var wrapped: Data
    public var policy: Data
    /// `L` for this record (from its policy; the server checks it against the realm's maximum).
    public var guessLimit: Int
    public init(version: Data, c: Data, commitment: Data, vk: Data, sig: Data, tag: Data, wrapped: Data, policy: Data, guessLimit: Int) {
        self.guessLimit = guessLimit
        self.version = version
        self.c = c
        self.commitment = commitment
        self.vk = vk
        self.sig = sig
        self.tag = tag
        self.wrapped = wrapped
        self.policy = policy
    }
}

/// Deliberate refusals; each is answered sealed and leaves the record as it was.
public enum RealmRefusal: Error, Sendable, Equatable, CustomStringConvertible {
    case notRegistered
    case locked
    /// Locked, and this request's transaction is the one that destroyed the record.
    case destroyedNow
    /// The request names another version than the record's.
    case versionMismatch
    /// Unknown, expired, foreign or wrong-scope ticket.
    case badTicket
    /// The ticket was already spent (by another request than an identical Q1 retry).
    case ticketReused
    /// Unknown, expired or already spent pending registration.
    case badPending
    /// No live challenge to answer (none issued, expired, or already spent).
    case noChallenge
    /// R2 over an active record without a valid replace proof and without a `reset`-scoped token.
    case replaceNotProven
    /// The unlock proof did not verify.
    case wrongProof
    /// The blinded element is not a valid group element.
    case badElement
    /// All `L` guesses of this epoch are in flight; the record is destroyed unless one unlocks.
    case noGuessesLeft

    public var description: String {
        switch self {
        case .notRegistered: return "not registered"
        case .locked, .destroyedNow: return "locked: too many wrong guesses"
        case .versionMismatch: return "the record has another version"
        case .badTicket: return "unknown or expired ticket"
        case .ticketReused: return "ticket already used"
        case .badPending: return "unknown or expired pending registration"
        case .noChallenge: return "no challenge to answer"
        case .replaceNotProven: return "an active record exists and the replacement carries no valid proof"
        case .wrongProof: return "unlock proof did not verify"
        case .badElement: return "invalid blinded element"
        case .noGuessesLeft: return "no guesses left"
        }
    }
}

/// One realm's database: records, pending registrations, tickets and challenges in one SQLite file
/// (WAL, `synchronous=FULL`). Every state change is one transaction, made durable before the
/// caller answers; concurrent writers are batched into group commits.
public final class RealmStore: Sendable {
    public struct Limits: Sendable {
        public var guessLimit: Int
        public var ticketLifetime: TimeInterval = 300
        public var challengeLifetime: TimeInterval = 120
        public var pendingLifetime: TimeInterval = 600
        public var pendingPerUser = 4
        /// A head slot not written for this long may be replaced by a new slot when the user has
        /// `HeadWire.maxSlots` (an abandoned writer, or a key rotated away); fresh slots never are.
        public var headSlotIdleLifetime: TimeInterval = 400 * 24 * 3600
        public init(guessLimit: Int) { self.guessLimit = guessLimit }
    }

    let pool: DatabasePool
    let group: GroupCommit
    let crypto: RecordCrypto
    let realmID: Data
    let x: UInt8
    public let limits: Limits
    let now: @Sendable () -> Date
    /// Parsed VOPRF keys of recently guessed records (parsing derives the public key: a P-384
    /// scalar multiplication that would otherwise be paid on every guess).
    let oprfKeys = OPRFKeyCache()
    /// VOPRF evaluations performed (Q1 and R1): the expensive part of a request, counted so tests
    /// and metrics can show that a refused request cost none.
    let evaluationCounter = Atomic<Int>(0)

    /// VOPRF evaluations performed since start.
    public var oprfEvaluations: Int { evaluationCounter.load(ordering: .relaxed) }

    /// Opens (creating if needed) the store at `url`.
    // Not inlined: Swift 6.3.1's optimizer crashed (CopyPropagation, "outside of lifetime use" on the
    // Atomic counter's drop) when this throwing init was inlined into an async caller in release builds.
    @inline(never)
    public init(url: URL, keys: RealmKeys, config: RealmConfig, limits: Limits? = nil,
                now: @escaping @Sendable () -> Date = { Date() }) throws {
        var c = Configuration()
        c.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
        }
        c.busyMode = .timeout(10)
        self.pool = try DatabasePool(path: url.path, configuration: c)
        self.group = GroupCommit(writer: pool)
        self.crypto = RecordCrypto(storageKey: keys.storageKey)
        self.realmID = keys.realmID
        self.x = config.x
        self.limits = limits ?? Limits(guessLimit: config.guessLimit)
        self.now = now
        try Self.migrator.migrate(pool)
    }

    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1") { db in
            // record: id = record key; gen = plaintext generation (part of the seal's AAD);
            // lockAt = set while the last guess of an epoch is in flight: when it passes, destroy.
            try db.execute(sql: """
                CREATE TABLE record (id BLOB PRIMARY KEY, gen INTEGER NOT NULL, lockAt REAL, sealed BLOB NOT NULL) WITHOUT ROWID;
                CREATE INDEX record_lockAt ON record(lockAt) WHERE lockAt IS NOT NULL;
                CREATE TABLE pending (id BLOB PRIMARY KEY, record BLOB NOT NULL, created REAL NOT NULL, expires REAL NOT NULL, sealed BLOB NOT NULL) WITHOUT ROWID;
                CREATE INDEX pending_record ON pending(record);
                CREATE INDEX pending_expires ON pending(expires);
                CREATE TABLE ticket (id BLOB PRIMARY KEY, record BLOB NOT NULL, scope TEXT NOT NULL, expires REAL NOT NULL, sealed BLOB) WITHOUT ROWID;
                CREATE INDEX ticket_expires ON ticket(expires);
                CREATE TABLE challenge (id BLOB PRIMARY KEY, record BLOB NOT NULL, created REAL NOT NULL, expires REAL NOT NULL) WITHOUT ROWID;
                CREATE INDEX challenge_record ON challenge(record);
                CREATE INDEX challenge_expires ON challenge(expires);
                """)
        }
        // Anchored backup heads (RealmHeads.swift): id = keyed row id, sealed = slot, seq, auth hash, sealed head.
        m.registerMigration("v2-heads") { db in
            try db.execute(sql: """
                CREATE TABLE head (id BLOB PRIMARY KEY, record BLOB NOT NULL, updated REAL NOT NULL, sealed BLOB NOT NULL) WITHOUT ROWID;
                CREATE INDEX head_record ON head(record);
                """)
        }
        registerReplayMigration(&m)
        // A spent challenge keeps SHA-256(proof) ‖ outcome (1 unlocked, 0 wrong) until it expires, so a
        // Q2 whose answer was lost can be resent (docs/REALM.md); only unspent ones are "live".
        m.registerMigration("v3-challenge-outcome") { db in
            try db.execute(sql: "ALTER TABLE challenge ADD COLUMN outcome BLOB")
        }
        return m
    }

    public func recordKey(tenant: String, user: String) -> Data { crypto.recordKey(tenant: tenant, user: user) }
    public func auditRef(tenant: String, user: String) -> String { crypto.auditRef(tenant: tenant, user: user) }

    /// (group commits, jobs in them) since start.
    public var commitCounts: (batches: Int, jobs: Int) { group.counts }

    // MARK: row helpers (inside a transaction)

    private func loadRecord(_ db: Database, _ rk: Data) throws -> RecordRow? {
        guard let row = try GRDB.Row.fetchOne(db, sql: "SELECT gen, sealed FROM record WHERE id = ?", arguments: [rk]) else { return nil }
        let gen: Int64 = row["gen"]
        let sealed: Data = row["sealed"]
        return RecordRow(gen: gen, record: try crypto.openRecord(sealed, recordKey: rk, gen: gen))
    }

    func loadTicket(_ db: Database, _ tid: Data) throws -> TicketRow? {
        guard let row = try GRDB.Row.fetchOne(db, sql: "SELECT record, scope, expires, sealed FROM ticket WHERE id = ?", arguments: [tid])
        else { return nil }
        return TicketRow(record: row["record"], scope: row["scope"], expires: row["expires"], sealed: row["sealed"])
    }

    /// Compare-and-swap on `gen`: the write only lands on the generation that was read.
    private func storeRecord(_ db: Database, _ rk: Data, old: Int64?, _ record: StoredRecord, lockAt: Double?) throws {
        if let old {
            let new = old + 1
            try db.execute(sql: "UPDATE record SET gen = ?, lockAt = ?, sealed = ? WHERE id = ? AND gen = ?",
                           arguments: [new, lockAt, try crypto.sealRecord(record, recordKey: rk, gen: new), rk, old])
            guard db.changesCount == 1 else { throw StoreConflict() }
        } else {
            // A fresh record's generation starts from the clock, so generations never repeat across a delete.
            let gen = Int64(now().timeIntervalSince1970 * 1_000_000)
            try db.execute(sql: "INSERT INTO record (id, gen, lockAt, sealed) VALUES (?, ?, ?, ?)",
                           arguments: [rk, gen, lockAt, try crypto.sealRecord(record, recordKey: rk, gen: gen)])
        }
    }

    /// Replaces a record with its tombstone and wipes its challenges.
    private func destroy(_ db: Database, _ rk: Data, _ row: RecordRow) throws {
        try storeRecord(db, rk, old: row.gen, .tombstone(version: row.record.version), lockAt: nil)
        try db.execute(sql: "DELETE FROM challenge WHERE record = ?", arguments: [rk])
    }

    private func hasLiveChallenge(_ db: Database, _ rk: Data, at t: Double) throws -> Bool {
        try GRDB.Row.fetchOne(db, sql: "SELECT 1 FROM challenge WHERE record = ? AND expires > ? AND outcome IS NULL LIMIT 1",
                              arguments: [rk, t]) != nil
    }

    /// The destruction rule: at `L` attempts the record is destroyed as soon as no challenge is live.
    /// Returns true if it destroyed the record.
    private func applyDestruction(_ db: Database, _ rk: Data, _ row: RecordRow, at t: Double) throws -> Bool {
        guard RealmRules.destructionDue(row.record) else { return false }
        guard try !hasLiveChallenge(db, rk, at: t) else { return false }
        try destroy(db, rk, row)
        return true
    }

    // MARK: operations

    /// Q0: the record's status and a fresh ticket for `scope` (durable before it is returned).
    /// Applies the destruction rule first. Costs no guess.
    public func query(tenant: String, user: String, scope: VaultScope) async throws -> (status: RecordStatus, ticket: Data, destroyed: Bool) {
        let rk = recordKey(tenant: tenant, user: user)
        let ticket = RealmRules.random(32)
        let t = now().timeIntervalSince1970
        let ticketLife = limits.ticketLifetime
        return try await group.write { db in
            var row = try self.loadRecord(db, rk)
            var destroyed = false
            if let r = row, try self.applyDestruction(db, rk, r, at: t) {
                row = try self.loadRecord(db, rk)
                destroyed = true
            }
            try db.execute(sql: "INSERT INTO ticket (id, record, scope, expires, sealed) VALUES (?, ?, ?, ?, NULL)",
                           arguments: [RealmRules.sha256(ticket), rk, scope.rawValue, t + ticketLife])
            return (RealmRules.status(of: row?.record), ticket, destroyed)
        }
    }

    /// Q1: spends the ticket and one guess in one durable transaction, then answers the evaluation,
    /// the record's share fields and a fresh challenge. A retry with the same ticket and byte-identical
    /// blinded element gets the stored answer without a second increment.
    public func guess(tenant: String, user: String, ticket: Data, version: Data, blinded: Data) async throws -> (answer: GuessAnswer, retried: Bool, lastGuess: Bool) {
        let rk = recordKey(tenant: tenant, user: user)
        let t = now().timeIntervalSince1970
        let tid = RealmRules.sha256(ticket)
        // Cheap refusals first: the ticket is checked (a read) before any curve operation, so a
        // request with a made-up, expired, foreign or wrong-scope ticket costs no evaluation. A
        // spent ticket needs none either (an identical retry gets its stored answer).
        // Evaluate outside the write transaction (it is the expensive part) on a snapshot; the
        // transaction below re-checks the ticket, and that the record still has this version, hence this key.
        let (ticketUnspent, snapshot) = try await pool.read { db -> (Bool, RecordRow?) in
            guard let tr = try self.loadTicket(db, tid), tr.admits(recordKey: rk, scope: .recover, at: t) else { throw RealmRefusal.badTicket }
            return (tr.sealed == nil, try self.loadRecord(db, rk))
        }
        let evaluation = try RealmRules.evaluateGuess(blinded: blinded, version: version, ticketUnspent: ticketUnspent,
                                                      snapshot: snapshot?.record, recordKey: rk, keys: oprfKeys, counter: evaluationCounter)
        let challenge = RealmRules.random(32)
        let limits = self.limits
        // Refusals are returned, not thrown, where the transaction wrote something that must commit.
        let outcome: Result<(answer: GuessAnswer, retried: Bool, lastGuess: Bool), RealmRefusal> = try await group.write { db in
            guard let tr = try self.loadTicket(db, tid), tr.admits(recordKey: rk, scope: .recover, at: t) else { throw RealmRefusal.badTicket }
            if let stored = tr.sealed {
                // Spent: an identical retry gets the stored answer again, anything else nothing.
                let answer = try RealmRules.storedGuess(stored, blinded: blinded, ticketID: tid, recordKey: rk, crypto: self.crypto)
                return .success((answer, true, false))
            }
            guard let row = try self.loadRecord(db, rk) else { throw RealmRefusal.notRegistered }
            if try self.applyDestruction(db, rk, row, at: t) { return .failure(.destroyedNow) }
            let counted = try RealmRules.countGuess(row.record, version: version, evaluation: evaluation, challenge: challenge, at: t, limits: limits)
            try self.storeRecord(db, rk, old: row.gen, counted.record, lockAt: counted.lockAt)
            try db.execute(sql: "INSERT INTO challenge (id, record, created, expires) VALUES (?, ?, ?, ?)",
                           arguments: [RealmRules.sha256(challenge), rk, t, counted.challengeExpires])
            try db.execute(sql: "UPDATE ticket SET sealed = ? WHERE id = ?",
                           arguments: [try RealmRules.sealGuess(blinded, counted.answer, ticketID: tid, recordKey: rk, crypto: self.crypto), tid])
            return .success((counted.answer, false, counted.last))
        }
        return try outcome.get()
    }

    /// Q2: spends the challenge the request names. With a matching proof (compared in constant
    /// time): attempts = 0, every other challenge of the record is dropped (the epoch ends) and `W`
    /// is returned. With a wrong proof the challenge is spent, and a record at `L` attempts with no
    /// live challenge left is destroyed. A spent challenge keeps `SHA-256(proof)` and the outcome
    /// until it expires: a byte-identical retry (its answer was lost) gets the same outcome again
    /// without any change, so a lost Q2 never costs a new guess. An unknown, expired or spent
    /// challenge with another proof spends nothing.
    public func unlock(tenant: String, user: String, version: Data, challenge: Data, proof: Data) async throws -> UnlockOutcome {
        let rk = recordKey(tenant: tenant, user: user)
        let t = now().timeIntervalSince1970
        let realmID = self.realmID
        let cid = RealmRules.sha256(challenge)
        let outcome: Result<UnlockOutcome, RealmRefusal> = try await group.write { db in
            guard let row = try self.loadRecord(db, rk) else { return .failure(.notRegistered) }
            if try self.applyDestruction(db, rk, row, at: t) { return .success(.destroyed) }
            if let refusal = RealmRules.refusal(answering: row.record, version: version) { return .failure(refusal) }
            guard let crow = try GRDB.Row.fetchOne(db, sql: "SELECT outcome FROM challenge WHERE id = ? AND record = ? AND expires > ?",
                                                   arguments: [cid, rk, t])
            else { return .failure(.noChallenge) }
            let proofHash = RealmRules.sha256(proof)
            if let stored = crow["outcome"] as Data? {
                // Spent. A byte-identical retry (the answer was lost on the way) gets the same
                // outcome again and changes nothing; any other proof gets nothing.
                return RealmRules.retriedUnlock(spent: stored, proofHash: proofHash, record: row.record)
            }
            let success = RealmRules.unlockProofValid(proof, tag: row.record.tag, realmID: realmID, version: version, challenge: challenge)
            // Spend the challenge: keep it (until it expires) with the outcome, for a retry.
            try db.execute(sql: "UPDATE challenge SET outcome = ? WHERE id = ?",
                           arguments: [RealmRules.spentChallenge(proofHash: proofHash, success: success), cid])
            if success {
                let record = RealmRules.unlocked(row.record)
                try self.storeRecord(db, rk, old: row.gen, record, lockAt: nil)
                try db.execute(sql: "DELETE FROM challenge WHERE record = ? AND id != ?", arguments: [rk, cid])
                return .success(.unlocked(wrapped: record.wrapped))
            }
            if try self.applyDestruction(db, rk, row, at: t) { return .success(.destroyed) }
            return .success(.wrongProof(attemptsLeft: RealmRules.attemptsLeft(row.record)))
        }
        return try outcome.get()
    }

    /// R1: a fresh VOPRF key as a pending registration (sealed, expiring, at most a few per user,
    /// the oldest dropped beyond that), and its evaluation of `blinded`.
    public func beginRegistration(tenant: String, user: String, blinded: Data) async throws -> PendingAnswer {
        let rk = recordKey(tenant: tenant, user: user)
        let (answer, keyBytes, pid) = try RealmRules.beginRegistration(blinded: blinded, counter: evaluationCounter)
        let t = now().timeIntervalSince1970
        let limits = self.limits
        try await group.write { db in
            try db.execute(sql: "INSERT INTO pending (id, record, created, expires, sealed) VALUES (?, ?, ?, ?, ?)",
                           arguments: [pid, rk, t, t + limits.pendingLifetime,
                                       try RealmRules.sealPendingKey(keyBytes, pendingRowID: pid, recordKey: rk, crypto: self.crypto)])
            try db.execute(sql: """
                DELETE FROM pending WHERE record = ? AND id NOT IN
                  (SELECT id FROM pending WHERE record = ? AND expires > ? ORDER BY created DESC, id LIMIT ?)
                """, arguments: [rk, rk, t, limits.pendingPerUser])
        }
        return answer
    }

    /// How R2 may replace an *active* record (over none or a tombstone neither is needed).
    public struct ReplaceAuthority: Sendable {
        /// The request's replace proof (all zero or empty: none).
        public var proof: Data
        /// The request's token has the `reset` scope: it may replace without proof, and is counted.
        public var reset: Bool
        public init(proof: Data, reset: Bool) {
            self.proof = proof
            self.reset = reset
        }
    }

    /// What R2 did to the record it replaced.
    public enum RegistrationOutcome: Sendable, Equatable {
        /// Stored over no record or a tombstone.
        case fresh
        /// Replaced an active record with a valid proof of the current password.
        case proven
        /// Replaced an active record on a `reset`-scoped token without proof: counted in the record.
        case reset(count: Int)
    }

    /// R2: spends the pending registration and, if the record's version is `expectedVersion`
    /// (`nil`: no record, or a destroyed one), replaces the record with the new fields, this realm's
    /// `x` and the pending key. `attempts` is the replaced active record's count (0 over none or a
    /// tombstone): a registration never resets guesses counted here. An *active* record is replaced
    /// only with a valid replace proof (keyed by its stored unlock tag, compared in constant time) or
    /// on a `reset`-scoped token, which increments the record's `resets`; otherwise
    /// ``RealmRefusal/replaceNotProven`` and nothing changes (the pending registration stays unspent).
    @discardableResult
    public func completeRegistration(tenant: String, user: String, pendingID: Data, expectedVersion: Data?,
                                     fields: RegistrationFields,
                                     replace: ReplaceAuthority = ReplaceAuthority(proof: Data(), reset: false)) async throws -> RegistrationOutcome {
        let rk = recordKey(tenant: tenant, user: user)
        let pid = RealmRules.sha256(pendingID)
        let t = now().timeIntervalSince1970
        let x = self.x
        let realmID = self.realmID
        return try await group.write { db in
            guard let prow = try GRDB.Row.fetchOne(db, sql: "SELECT record, expires, sealed FROM pending WHERE id = ?", arguments: [pid]),
                  RealmRules.pendingValid(record: prow["record"], expires: prow["expires"], recordKey: rk, at: t)
            else { throw RealmRefusal.badPending }
            let oprfKey = try RealmRules.openPendingKey(prow["sealed"], pendingRowID: pid, recordKey: rk, crypto: self.crypto)
            let current = try self.loadRecord(db, rk)
            let (outcome, resets) = try RealmRules.replacement(of: current?.record, expectedVersion: expectedVersion, newVersion: fields.version,
                                                               replace: replace, realmID: realmID, pendingID: pendingID)
            try db.execute(sql: "DELETE FROM pending WHERE id = ?", arguments: [pid])
            let record = try RealmRules.registeredRecord(fields, oprfKey: oprfKey, x: x, replacing: current?.record, resets: resets)
            try self.storeRecord(db, rk, old: current?.gen, record, lockAt: nil)
            try db.execute(sql: "DELETE FROM challenge WHERE record = ?", arguments: [rk])
            return outcome
        }
    }

    /// How many counted resets the user's record holds (0 without a record). A read for tests and tools.
    public func resetCount(tenant: String, user: String) async throws -> Int {
        let rk = recordKey(tenant: tenant, user: user)
        return try await pool.read { db in try self.loadRecord(db, rk)?.record.resets ?? 0 }
    }

    /// Delete (disable): spends a `delete` ticket and removes the record if it has `expectedVersion`.
    public func delete(tenant: String, user: String, ticket: Data, expectedVersion: Data) async throws {
        let rk = recordKey(tenant: tenant, user: user)
        let tid = RealmRules.sha256(ticket)
        let t = now().timeIntervalSince1970
        try await group.write { db in
            guard let tr = try self.loadTicket(db, tid), tr.admits(recordKey: rk, scope: .delete, at: t) else { throw RealmRefusal.badTicket }
            guard tr.sealed == nil else { throw RealmRefusal.ticketReused }
            guard let row = try self.loadRecord(db, rk) else { throw RealmRefusal.notRegistered }
            guard row.record.version == expectedVersion else { throw RealmRefusal.versionMismatch }
            // Mark the ticket spent (a non-null seal), in the same transaction as the delete.
            try db.execute(sql: "UPDATE ticket SET sealed = ? WHERE id = ?",
                           arguments: [try RealmRules.sealSpentTicket(ticketID: tid, recordKey: rk, crypto: self.crypto), tid])
            try db.execute(sql: "DELETE FROM record WHERE id = ? AND gen = ?", arguments: [rk, row.gen])
            try db.execute(sql: "DELETE FROM challenge WHERE record = ?", arguments: [rk])
            try db.execute(sql: "DELETE FROM pending WHERE record = ?", arguments: [rk])
        }
    }

    /// Housekeeping: wipes expired tickets, challenges and pending registrations, and destroys
    /// records whose last guess's challenge expired. Returns the number of records destroyed.
    @discardableResult
    public func sweep() async throws -> Int {
        let t = now().timeIntervalSince1970
        return try await group.write { db in
            try db.execute(sql: "DELETE FROM ticket WHERE expires <= ?", arguments: [t])
            try db.execute(sql: "DELETE FROM challenge WHERE expires <= ?", arguments: [t])
            try db.execute(sql: "DELETE FROM pending WHERE expires <= ?", arguments: [t])
            try Self.sweepMarks(db, at: t)
            let due = try Data.fetchAll(db, sql: "SELECT id FROM record WHERE lockAt IS NOT NULL AND lockAt <= ?", arguments: [t])
            var n = 0
            for rk in due {
                if let row = try self.loadRecord(db, rk), try self.applyDestruction(db, rk, row, at: t) { n += 1 }
            }
            return n
        }
    }

    /// Raw status read (no ticket, no destruction) for tests and tools.
    public func peekStatus(tenant: String, user: String) async throws -> RecordStatus {
        let rk = recordKey(tenant: tenant, user: user)
        return try await pool.read { db in RealmRules.status(of: try self.loadRecord(db, rk)?.record) }
    }

}

/// The record changed under a compare-and-swap (another process wrote it): the transaction rolls back.
struct StoreConflict: Error {}

/// A small cache of parsed VOPRF private keys, keyed by record key and checked against the raw key
/// (a re-registration changes it). Holds nothing the process does not already hold.
final class OPRFKeyCache: Sendable {
    private struct Entry: @unchecked Sendable {
        var raw: Data
        var key: P384._VOPRF.PrivateKey
    }
    private let entries = Mutex<[Data: Entry]>([:])
    private let capacity = 4096

    func key(recordKey: Data, raw: Data) throws -> P384._VOPRF.PrivateKey {
        if let e = entries.withLock({ $0[recordKey] }), constantTimeEqual(e.raw, raw) { return e.key }
        let key = try P384._VOPRF.PrivateKey(rawRepresentation: raw)
        entries.withLock {
            if $0.count >= capacity { $0.removeAll(keepingCapacity: true) }
            $0[recordKey] = Entry(raw: raw, key: key)
        }
        return key
    }
}
