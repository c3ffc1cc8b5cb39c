#if canImport(PostgresNIO)
import CofferCore
import CofferVault
import Crypto
import CryptoExtras
import Foundation
import Logging
import PostgresNIO
import Synchronization

/// The realm's store in PostgreSQL (postgres-nio, a `PostgresClient` connection pool). Same tables,
/// same seals and the same rules as the SQLite ``RealmStore``; several realm processes may share one
/// database (behind any load balancer) and every guarantee of ``RealmDatabase`` holds across them.
///
/// How (docs/REALM.md, "PostgreSQL"): every transaction runs at READ COMMITTED and, when it touches
/// a user's rows, first takes that user's **transaction-scoped advisory lock**
/// (`pg_advisory_xact_lock` on the first 8 bytes of the record key). All writers of one user are
/// thereby serialized across every process and connection; each statement after the lock sees every
/// transaction that held it before (READ COMMITTED takes a fresh snapshot per statement, and the lock
/// is released only at the holder's commit). On top, as on SQLite, the record is written by
/// compare-and-swap on its generation and a ticket is spent by a conditional update
/// (`WHERE sealed IS NULL`), each checked to have changed exactly one row. A transaction commits
/// with `synchronous_commit` as the server has it (default `on`: the WAL is flushed, and with a
/// synchronous standby also replicated, before COMMIT returns), and only then does the caller answer.
public final class PostgresRealmStore: Sendable {
    let client: PostgresClient
    private let runner: Mutex<Task<Void, Never>?>
    let crypto: RecordCrypto
    let realmID: Data
    let x: UInt8
    public let limits: RealmStore.Limits
    let now: @Sendable () -> Date
    let location: PostgresStoreURL
    let logger: Logger
    let oprfKeys = OPRFKeyCache()
    let evaluationCounter = Atomic<Int>(0)
    let commitCounter = Atomic<Int>(0)

    private init(client: PostgresClient, runner: Task<Void, Never>, keys: RealmKeys, config: RealmConfig, limits: RealmStore.Limits,
                 location: PostgresStoreURL, logger: Logger, now: @escaping @Sendable () -> Date) {
        self.client = client
        self.runner = Mutex(runner)
        self.crypto = RecordCrypto(storageKey: keys.storageKey)
        self.realmID = keys.realmID
        self.x = config.x
        self.limits = limits
        self.location = location
        self.logger = logger
        self.now = now
    }

    /// Connects (pool of `url.maxConnections`), creates the schema and tables if missing, and checks
    /// that the database belongs to this realm (a database or schema holds one realm's store).
    /// - Throws: ``RealmStoreUnavailable`` when the database cannot be reached, with what to check.
    public static func open(url: PostgresStoreURL, keys: RealmKeys, config: RealmConfig, limits: RealmStore.Limits? = nil,
                            logger: Logger? = nil, now: @escaping @Sendable () -> Date = { Date() }) async throws -> PostgresRealmStore {
        var c = PostgresClient.Configuration(host: url.host, port: url.port, username: url.user,
                                             password: url.password ?? ProcessInfo.processInfo.environment["PGPASSWORD"],
                                             database: url.database, tls: .disable)
        switch url.tls {
        case .disable: c.tls = .disable
        case .prefer: c.tls = .prefer(.makeClientConfiguration())
        case .require: c.tls = .require(.makeClientConfiguration())
        }
        c.options.maximumConnections = url.maxConnections
        c.options.connectTimeout = .seconds(5)
        if let schema = url.schema { c.options.additionalStartupParameters = [("search_path", schema)] }
        let client = PostgresClient(configuration: c, backgroundLogger: Logger(label: "coffer.realm.postgres", factory: { _ in SwiftLogNoOpLogHandler() }))
        let runner = Task { await client.run() }
        let store = PostgresRealmStore(client: client, runner: runner, keys: keys, config: config,
                                       limits: limits ?? RealmStore.Limits(guessLimit: config.guessLimit), location: url,
                                       logger: logger ?? Logger(label: "coffer.realm"), now: now)
        do {
            try await store.checkReady(timeout: .seconds(15))
            try await store.migrate(realmIDHex: keys.realmIDHex)
        } catch {
            await store.close()
            throw error
        }
        return store
    }

    /// Lock key of a user's rows: the first 8 bytes of the record key (a collision only serializes two users).
    static func lockKey(_ rk: Data) -> Int64 {
        var r = ByteReader(rk)
        return r.i64() ?? 0  // record keys are 32 bytes
    }

    // MARK: schema

    private func migrate(realmIDHex: String) async throws {
        let schema = location.schema
        try await client.withConnection { conn in
            try await conn.query("BEGIN", logger: logger)
            do {
                // One process at a time creates the tables (two realm processes may start together).
                try await conn.query("SELECT pg_advisory_xact_lock(7301016000)", logger: logger)
                if let schema {
                    // `schema` is a checked identifier (PostgresStoreURL); quoted all the same.
                    try await conn.query(PostgresQuery(unsafeSQL: "CREATE SCHEMA IF NOT EXISTS \"\(schema)\""), logger: logger)
                }
                for sql in Self.schemaSQL + Self.functionSQL {
                    try await conn.query(PostgresQuery(unsafeSQL: sql), logger: logger)
                }
                try await conn.query("INSERT INTO coffer_realm_meta (key, value) VALUES ('realm', \(realmIDHex)) ON CONFLICT (key) DO NOTHING",
                                     logger: logger)
                try await conn.query("INSERT INTO coffer_realm_meta (key, value) VALUES ('schema', '1') ON CONFLICT (key) DO NOTHING", logger: logger)
                var owner = ""
                for try await v in try await conn.query("SELECT value FROM coffer_realm_meta WHERE key = 'realm'", logger: logger).decode(String.self) {
                    owner = v
                }
                guard owner == realmIDHex else {
                    throw RealmStoreUnavailable("\(location) holds the store of realm \(owner), not of this realm (\(realmIDHex)): give each realm its own database or schema (?schema=NAME)")
                }
                try await conn.query("COMMIT", logger: logger)
            } catch {
                _ = try? await conn.query("ROLLBACK", logger: logger)
                throw error
            }
        }
    }

    /// The tables, as in the SQLite store (times are seconds since 1970, as `double precision`).
    static let schemaSQL: [String] = [
        "CREATE TABLE IF NOT EXISTS coffer_realm_meta (key text PRIMARY KEY, value text NOT NULL)",
        "CREATE TABLE IF NOT EXISTS record (id bytea PRIMARY KEY, gen bigint NOT NULL, lockat double precision, sealed bytea NOT NULL)",
        "CREATE INDEX IF NOT EXISTS record_lockat ON record(lockat) WHERE lockat IS NOT NULL",
        "CREATE TABLE IF NOT EXISTS pending (id bytea PRIMARY KEY, record bytea NOT NULL, created double precision NOT NULL, expires double precision NOT NULL, sealed bytea NOT NULL)",
        "CREATE INDEX IF NOT EXISTS pending_record ON pending(record)",
        "CREATE INDEX IF NOT EXISTS pending_expires ON pending(expires)",
        "CREATE TABLE IF NOT EXISTS ticket (id bytea PRIMARY KEY, record bytea NOT NULL, scope text NOT NULL, expires double precision NOT NULL, sealed bytea)",
        "CREATE INDEX IF NOT EXISTS ticket_expires ON ticket(expires)",
        "CREATE TABLE IF NOT EXISTS challenge (id bytea PRIMARY KEY, record bytea NOT NULL, created double precision NOT NULL, expires double precision NOT NULL, outcome bytea)",
        "CREATE INDEX IF NOT EXISTS challenge_record ON challenge(record)",
        "CREATE INDEX IF NOT EXISTS challenge_expires ON challenge(expires)",
        "CREATE TABLE IF NOT EXISTS head (id bytea PRIMARY KEY, record bytea NOT NULL, updated double precision NOT NULL, sealed bytea NOT NULL)",
        "CREATE INDEX IF NOT EXISTS head_record ON head(record)",
        "CREATE TABLE IF NOT EXISTS served (id bytea PRIMARY KEY, expires double precision NOT NULL)",
        "CREATE INDEX IF NOT EXISTS served_expires ON served(expires)",
    ]

    /// The server-side functions, created (or replaced: idempotent, so a store created before they
    /// existed gets them at its next open) under the migration lock. `SET search_path FROM CURRENT`
    /// binds a function to the schema it was created in (the realm's), whatever the caller's path.
    ///
    /// `coffer_guess_v1` is the locked part of a guess (Q1) in one statement (in a transaction of its
    /// own, `BEGIN` … `COMMIT`, never autocommit: see `guess`), so one commit: under the user's advisory lock (the one every other writer of the user's rows
    /// takes), it inserts the request's replay mark (1 if it is there already: nothing changes),
    /// checks that the ticket is the user's, `recover`, unexpired and unspent and that the record is
    /// still at the generation the realm read (a compare-and-swap), and only then writes the record
    /// sealed by the realm at the next generation, spends the ticket (storing the sealed answer), and
    /// inserts the challenge: 0. When either check fails it removes the mark again and changes
    /// nothing: 2, and the realm runs the general transaction (`guess` below). The function never
    /// sees a secret: every value it writes was sealed by the realm.
    static let functionSQL: [String] = [
        """
        CREATE OR REPLACE FUNCTION coffer_guess_v1(p_lock bigint, p_rk bytea, p_tid bytea, p_now double precision,
            p_old_gen bigint, p_new_gen bigint, p_sealed bytea, p_lockat double precision,
            p_cid bytea, p_cexpires double precision, p_ticket bytea, p_mark bytea, p_mark_expires double precision)
        RETURNS integer LANGUAGE plpgsql SET search_path FROM CURRENT AS $fn$
        BEGIN
            PERFORM pg_advisory_xact_lock(p_lock);
            IF p_mark IS NOT NULL THEN
                INSERT INTO served (id, expires) VALUES (p_mark, p_mark_expires) ON CONFLICT (id) DO NOTHING;
                IF NOT FOUND THEN RETURN 1; END IF;
            END IF;
            PERFORM 1 FROM ticket WHERE id = p_tid AND record = p_rk AND scope = 'recover' AND expires > p_now AND sealed IS NULL;
            IF FOUND THEN
                UPDATE record SET gen = p_new_gen, lockat = p_lockat, sealed = p_sealed WHERE id = p_rk AND gen = p_old_gen;
            END IF;
            IF NOT FOUND THEN
                IF p_mark IS NOT NULL THEN DELETE FROM served WHERE id = p_mark; END IF;
                RETURN 2;
            END IF;
            UPDATE ticket SET sealed = p_ticket WHERE id = p_tid AND sealed IS NULL;
            IF NOT FOUND THEN RAISE EXCEPTION 'coffer_guess_v1: ticket changed under the lock'; END IF;
            INSERT INTO challenge (id, record, created, expires) VALUES (p_cid, p_rk, p_now, p_cexpires);
            RETURN 0;
        END
        $fn$
        """,
    ]

    /// Whether guesses use `coffer_guess_v1` (always, unless the environment sets
    /// `COFFER_REALM_PG_GUESS_FUNCTION=0`: for the benchmark's comparison with the general transaction).
    static let guessFunction = ProcessInfo.processInfo.environment["COFFER_REALM_PG_GUESS_FUNCTION"] != "0"

    // MARK: transactions

    /// A connection inside a transaction.
    struct Tx {
        let conn: PostgresConnection
        let logger: Logger

        func rows(_ q: PostgresQuery) async throws -> [PostgresRow] {
            var out: [PostgresRow] = []
            for try await r in try await conn.query(q, logger: logger) { out.append(r) }
            return out
        }

        func one(_ q: PostgresQuery) async throws -> PostgresRow? { try await rows(q).first }

        /// Runs a statement; returns how many rows it returned (use `RETURNING 1` to count changes).
        @discardableResult
        func exec(_ q: PostgresQuery) async throws -> Int { try await rows(q).count }
    }

    /// Runs `body` in one READ COMMITTED transaction that commits before this returns.
    ///
    /// With `lock`, the user's advisory lock is taken first. The replay mark of the task's request
    /// (``RequestMark``) is inserted before `body`, outside its savepoint: a refusal `body` throws
    /// rolls back only `body`'s changes and the transaction still commits the mark, as on SQLite.
    func write<T: Sendable>(lock rk: Data?, _ body: @escaping @Sendable (Tx) async throws -> T) async throws -> T {
        try await write(lock: rk, mark: RequestMark.current?.take(), body)
    }

    /// ``write(lock:_:)`` with the replay mark given (nil: none to insert).
    func write<T: Sendable>(lock rk: Data?, mark: RequestMark?, _ body: @escaping @Sendable (Tx) async throws -> T) async throws -> T {
        let logger = self.logger
        let outcome: Result<T, any Error> = try await withConnection { conn in
            let tx = Tx(conn: conn, logger: logger)
            try await conn.query("BEGIN ISOLATION LEVEL READ COMMITTED", logger: logger)
            do {
                if let rk { try await tx.exec("SELECT pg_advisory_xact_lock(\(Self.lockKey(rk)))") }
                if let mark {
                    let inserted = try await tx.exec("INSERT INTO served (id, expires) VALUES (\(mark.id), \(mark.expires)) ON CONFLICT (id) DO NOTHING RETURNING 1")
                    guard inserted == 1 else { throw ReplayedRequest() }
                }
                try await conn.query("SAVEPOINT op", logger: logger)
                let result: Result<T, any Error>
                do {
                    result = .success(try await body(tx))
                } catch let e where Self.isRefusal(e) {
                    try await conn.query("ROLLBACK TO SAVEPOINT op", logger: logger)
                    result = .failure(e)
                }
                try await conn.query("COMMIT", logger: logger)
                return result
            } catch {
                _ = try? await conn.query("ROLLBACK", logger: logger)
                throw error
            }
        }
        commitCounter.add(1, ordering: .relaxed)
        return try outcome.get()
    }

    /// Deliberate outcomes that keep the request's mark (anything else rolls the whole transaction back).
    static func isRefusal(_ e: any Error) -> Bool {
        e is RealmRefusal || e is HeadRefusal
    }

    /// A read outside any transaction (one statement, its own snapshot).
    func read<T: Sendable>(_ body: @escaping @Sendable (Tx) async throws -> T) async throws -> T {
        let logger = self.logger
        return try await withConnection { conn in try await body(Tx(conn: conn, logger: logger)) }
    }

    /// How long a request waits for a pooled connection before it fails (the database is down or
    /// every connection is busy): the request gets an internal error instead of hanging, and
    /// `/ready` turns 503.
    static let leaseTimeout: Duration = .seconds(15)

    /// How long one operation (lease and transaction) may take before the caller gets an error:
    /// postgres-nio was seen to leave a query unanswered for good when the server died under it.
    static let operationTimeout: Duration = .seconds(30)

    /// Leases a connection for `body`. Fails after ``leaseTimeout`` if no connection comes (the pool
    /// otherwise waits for the database indefinitely), and after ``operationTimeout`` in all (a
    /// query on a connection whose server died was seen never to complete). The work runs in a task
    /// of its own that is cancelled and abandoned on a timeout, so the request is answered (an
    /// internal error) instead of hanging; a transaction that still commits afterwards is a guess
    /// counted without its answer, as with a crash, never the reverse.
    func withConnection<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        let leased = LeaseFlag()
        let location = self.location
        let client = self.client
        let gate = ResumeOnce<T>()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (cont: CheckedContinuation<T, any Error>) in
                gate.set(cont)
                let work = Task {
                    do {
                        let v = try await client.withConnection { conn in
                            leased.set()
                            return try await body(conn)
                        }
                        gate.resume(.success(v))
                    } catch {
                        gate.resume(.failure(error))
                    }
                }
                let timer = Task {
                    try? await Task.sleep(for: Self.leaseTimeout)
                    if Task.isCancelled { return }
                    if !leased.isSet {
                        gate.resume(.failure(RealmStoreUnavailable("no connection to \(location) within \(Self.leaseTimeout)")))
                        return
                    }
                    try? await Task.sleep(for: Self.operationTimeout - Self.leaseTimeout)
                    if Task.isCancelled { return }
                    gate.resume(.failure(RealmStoreUnavailable("no answer from \(location) within \(Self.operationTimeout)")))
                }
                gate.onFinish {
                    work.cancel()
                    timer.cancel()
                }
            }
        } onCancel: {
            gate.resume(.failure(CancellationError()))
        }
    }

    // MARK: row helpers

    func loadRecord(_ tx: Tx, _ rk: Data) async throws -> RecordRow? {
        guard let row = try await tx.one("SELECT gen, sealed FROM record WHERE id = \(rk)") else { return nil }
        let (gen, sealed) = try row.decode((Int64, Data).self)
        return RecordRow(gen: gen, record: try crypto.openRecord(sealed, recordKey: rk, gen: gen))
    }

    func storeRecord(_ tx: Tx, _ rk: Data, old: Int64?, _ record: StoredRecord, lockAt: Double?) async throws {
        if let old {
            let new = old + 1
            let sealed = try crypto.sealRecord(record, recordKey: rk, gen: new)
            let n = try await tx.exec("UPDATE record SET gen = \(new), lockat = \(lockAt), sealed = \(sealed) WHERE id = \(rk) AND gen = \(old) RETURNING 1")
            guard n == 1 else { throw StoreConflict() }
        } else {
            let gen = Int64(now().timeIntervalSince1970 * 1_000_000)
            let sealed = try crypto.sealRecord(record, recordKey: rk, gen: gen)
            try await tx.exec("INSERT INTO record (id, gen, lockat, sealed) VALUES (\(rk), \(gen), \(lockAt), \(sealed))")
        }
    }

    func destroy(_ tx: Tx, _ rk: Data, _ row: RecordRow) async throws {
        try await storeRecord(tx, rk, old: row.gen, .tombstone(version: row.record.version), lockAt: nil)
        try await tx.exec("DELETE FROM challenge WHERE record = \(rk)")
    }

    func hasLiveChallenge(_ tx: Tx, _ rk: Data, at t: Double) async throws -> Bool {
        try await tx.one("SELECT 1 FROM challenge WHERE record = \(rk) AND expires > \(t) AND outcome IS NULL LIMIT 1") != nil
    }

    func applyDestruction(_ tx: Tx, _ rk: Data, _ row: RecordRow, at t: Double) async throws -> Bool {
        guard RealmRules.destructionDue(row.record) else { return false }
        guard try await !hasLiveChallenge(tx, rk, at: t) else { return false }
        try await destroy(tx, rk, row)
        return true
    }

    func loadTicket(_ tx: Tx, _ tid: Data) async throws -> TicketRow? {
        guard let row = try await tx.one("SELECT record, scope, expires, sealed FROM ticket WHERE id = \(tid)") else { return nil }
        let (record, scope, expires, sealed) = try row.decode((Data, String, Double, Data?).self)
        return TicketRow(record: record, scope: scope, expires: expires, sealed: sealed)
    }

    /// Marks a ticket spent (a non-null seal) only if it was unspent.
    func spendTicket(_ tx: Tx, _ tid: Data, sealed: Data) async throws {
        let n = try await tx.exec("UPDATE ticket SET sealed = \(sealed) WHERE id = \(tid) AND sealed IS NULL RETURNING 1")
        guard n == 1 else { throw StoreConflict() }
    }

}

/// Resumes a continuation once (the first of the work's result, a timeout or cancellation wins).
final class ResumeOnce<T: Sendable>: Sendable {
    private struct State {
        var cont: CheckedContinuation<T, any Error>?
        var early: Result<T, any Error>?
        var done = false
        var finish: (@Sendable () -> Void)?
    }
    private let state = Mutex(State())

    func set(_ cont: CheckedContinuation<T, any Error>) {
        let early = state.withLock { s -> Result<T, any Error>? in
            if let e = s.early { s.early = nil; return e }
            s.cont = cont
            return nil
        }
        if let early { cont.resume(with: early) }
    }

    func onFinish(_ f: @escaping @Sendable () -> Void) {
        let run = state.withLock { s -> Bool in
            if s.done { return true }
            s.finish = f
            return false
        }
        if run { f() }
    }

    func resume(_ r: Result<T, any Error>) {
        let (cont, finish) = state.withLock { s -> (CheckedContinuation<T, any Error>?, (@Sendable () -> Void)?) in
            if s.done { return (nil, nil) }
            s.done = true
            let c = s.cont
            s.cont = nil
            if c == nil { s.early = r }
            let f = s.finish
            s.finish = nil
            return (c, f)
        }
        cont?.resume(with: r)
        finish?()
    }
}

/// Set once a connection was leased.
final class LeaseFlag: Sendable {
    private let value = Mutex(false)
    func set() { value.withLock { $0 = true } }
    var isSet: Bool { value.withLock { $0 } }
}

extension PostgresRealmStore: RealmDatabase {
    public var storeDescription: String { "PostgreSQL \(location)" }
    public func recordKey(tenant: String, user: String) -> Data { crypto.recordKey(tenant: tenant, user: user) }
    public func auditRef(tenant: String, user: String) -> String { crypto.auditRef(tenant: tenant, user: user) }
    public var oprfEvaluations: Int { evaluationCounter.load(ordering: .relaxed) }
    public var commitCounts: (batches: Int, jobs: Int) {
        let n = commitCounter.load(ordering: .relaxed)
        return (n, n)
    }

    public func query(tenant: String, user: String, scope: VaultScope) async throws -> (status: RecordStatus, ticket: Data, destroyed: Bool) {
        let rk = recordKey(tenant: tenant, user: user)
        let ticket = RealmRules.random(32)
        let t = now().timeIntervalSince1970
        let expires = t + limits.ticketLifetime
        return try await write(lock: rk) { tx in
            var row = try await self.loadRecord(tx, rk)
            var destroyed = false
            if let r = row, try await self.applyDestruction(tx, rk, r, at: t) {
                row = try await self.loadRecord(tx, rk)
                destroyed = true
            }
            try await tx.exec("INSERT INTO ticket (id, record, scope, expires, sealed) VALUES (\(RealmRules.sha256(ticket)), \(rk), \(scope.rawValue), \(expires), NULL)")
            return (RealmRules.status(of: row?.record), ticket, destroyed)
        }
    }

    public func guess(tenant: String, user: String, ticket: Data, version: Data, blinded: Data) async throws -> (answer: GuessAnswer, retried: Bool, lastGuess: Bool) {
        let rk = recordKey(tenant: tenant, user: user)
        let t = now().timeIntervalSince1970
        let tid = RealmRules.sha256(ticket)
        // Cheap refusals first (a read), then the evaluation outside the transaction, as on SQLite.
        // One statement (one round trip) reads the ticket and the record.
        let (ticketUnspent, snapshot) = try await read { tx -> (Bool, RecordRow?) in
            guard let row = try await tx.one("""
                SELECT t.record, t.scope, t.expires, t.sealed IS NULL, r.gen, r.sealed
                FROM ticket t LEFT JOIN record r ON r.id = \(rk) WHERE t.id = \(tid)
                """) else { throw RealmRefusal.badTicket }
            let (record, scope, expires, unspent, gen, sealed) = try row.decode((Data, String, Double, Bool, Int64?, Data?).self)
            guard RealmRules.ticketAdmits(record: record, scope: scope, expires: expires, recordKey: rk, scope: .recover, at: t)
            else { throw RealmRefusal.badTicket }
            guard let gen, let sealed else { return (unspent, nil) }
            return (unspent, RecordRow(gen: gen, record: try self.crypto.openRecord(sealed, recordKey: rk, gen: gen)))
        }
        let evaluation = try RealmRules.evaluateGuess(blinded: blinded, version: version, ticketUnspent: ticketUnspent,
                                                      snapshot: snapshot?.record, recordKey: rk, keys: oprfKeys, counter: evaluationCounter)
        let challenge = RealmRules.random(32)
        let limits = self.limits
        let mark = RequestMark.current?.take()
        // The common case in one statement (`coffer_guess_v1`, see `functionSQL`): a live ticket and an
        // active record of this version with guesses left, as read above (the guess counted as the
        // general transaction would count it; any refusal it would give leaves it to that transaction).
        // The function commits the guess only if the ticket is still unspent and the record still at
        // the generation read, under the user's lock; otherwise it changes nothing and the general
        // transaction below decides.
        if Self.guessFunction, let snap = snapshot,
           let counted = try? RealmRules.countGuess(snap.record, version: version, evaluation: evaluation, challenge: challenge, at: t, limits: limits) {
            let answer = counted.answer
            let last = counted.last
            let cexpires = counted.challengeExpires
            let newGen = snap.gen + 1
            let sealed = try crypto.sealRecord(counted.record, recordKey: rk, gen: newGen)
            let sealedTicket = try RealmRules.sealGuess(blinded, answer, ticketID: tid, recordKey: rk, crypto: crypto)
            let lockAt = counted.lockAt
            let cid = RealmRules.sha256(challenge)
            let lock = Self.lockKey(rk)
            let oldGen = snap.gen
            let markID = mark?.id
            let markExpires = mark?.expires
            // In an explicit transaction, not in autocommit: postgres-nio hands over a statement's
            // result at its CommandComplete, and an autocommit statement's implicit transaction
            // commits only at the Sync that follows, so the answer could leave before the guess is
            // durable (and a failed commit would go unseen). COMMIT's own CommandComplete comes once
            // the commit is durable (synchronous_commit, the standby's acknowledgement included).
            let logger = self.logger
            let code = try await withConnection { conn -> Int32 in
                let tx = Tx(conn: conn, logger: logger)
                try await conn.query("BEGIN ISOLATION LEVEL READ COMMITTED", logger: logger)
                do {
                    guard let row = try await tx.one("""
                        SELECT coffer_guess_v1(\(lock), \(rk), \(tid), \(t), \(oldGen), \(newGen), \(sealed), \(lockAt), \(cid), \(cexpires),
                                               \(sealedTicket), \(markID), \(markExpires))
                        """) else { throw StoreError.corrupt }
                    let code = try row.decode(Int32.self)
                    try await conn.query("COMMIT", logger: logger)
                    return code
                } catch {
                    _ = try? await conn.query("ROLLBACK", logger: logger)
                    throw error
                }
            }
            switch code {
            case 0:
                commitCounter.add(1, ordering: .relaxed)
                return (answer, false, last)
            case 1:
                throw ReplayedRequest()
            default:
                break  // changed since the read: the general transaction, with the same mark
            }
        }
        let outcome: Result<(answer: GuessAnswer, retried: Bool, lastGuess: Bool), RealmRefusal> = try await write(lock: rk, mark: mark) { tx in
            guard let tr = try await self.loadTicket(tx, tid), tr.admits(recordKey: rk, scope: .recover, at: t)
            else { throw RealmRefusal.badTicket }
            if let stored = tr.sealed {
                let answer = try RealmRules.storedGuess(stored, blinded: blinded, ticketID: tid, recordKey: rk, crypto: self.crypto)
                return .success((answer, true, false))
            }
            guard let row = try await self.loadRecord(tx, rk) else { throw RealmRefusal.notRegistered }
            if try await self.applyDestruction(tx, rk, row, at: t) { return .failure(.destroyedNow) }
            let counted = try RealmRules.countGuess(row.record, version: version, evaluation: evaluation, challenge: challenge, at: t, limits: limits)
            try await self.storeRecord(tx, rk, old: row.gen, counted.record, lockAt: counted.lockAt)
            try await tx.exec("INSERT INTO challenge (id, record, created, expires) VALUES (\(RealmRules.sha256(challenge)), \(rk), \(t), \(counted.challengeExpires))")
            try await self.spendTicket(tx, tid, sealed: try RealmRules.sealGuess(blinded, counted.answer, ticketID: tid, recordKey: rk, crypto: self.crypto))
            return .success((counted.answer, false, counted.last))
        }
        return try outcome.get()
    }

    public func unlock(tenant: String, user: String, version: Data, challenge: Data, proof: Data) async throws -> UnlockOutcome {
        let rk = recordKey(tenant: tenant, user: user)
        let t = now().timeIntervalSince1970
        let realmID = self.realmID
        let cid = RealmRules.sha256(challenge)
        let outcome: Result<UnlockOutcome, RealmRefusal> = try await write(lock: rk) { tx in
            guard let row = try await self.loadRecord(tx, rk) else { return .failure(.notRegistered) }
            if try await self.applyDestruction(tx, rk, row, at: t) { return .success(.destroyed) }
            if let refusal = RealmRules.refusal(answering: row.record, version: version) { return .failure(refusal) }
            guard let crow = try await tx.one("SELECT outcome FROM challenge WHERE id = \(cid) AND record = \(rk) AND expires > \(t)")
            else { return .failure(.noChallenge) }
            let proofHash = RealmRules.sha256(proof)
            if let stored = try crow.decode(Data?.self) {
                return RealmRules.retriedUnlock(spent: stored, proofHash: proofHash, record: row.record)
            }
            let success = RealmRules.unlockProofValid(proof, tag: row.record.tag, realmID: realmID, version: version, challenge: challenge)
            let spent = try await tx.exec("UPDATE challenge SET outcome = \(RealmRules.spentChallenge(proofHash: proofHash, success: success)) WHERE id = \(cid) AND outcome IS NULL RETURNING 1")
            guard spent == 1 else { throw StoreConflict() }
            if success {
                let record = RealmRules.unlocked(row.record)
                try await self.storeRecord(tx, rk, old: row.gen, record, lockAt: nil)
                try await tx.exec("DELETE FROM challenge WHERE record = \(rk) AND id <> \(cid)")
                return .success(.unlocked(wrapped: record.wrapped))
            }
            if try await self.applyDestruction(tx, rk, row, at: t) { return .success(.destroyed) }
            return .success(.wrongProof(attemptsLeft: RealmRules.attemptsLeft(row.record)))
        }
        return try outcome.get()
    }

    public func beginRegistration(tenant: String, user: String, blinded: Data) async throws -> PendingAnswer {
        let rk = recordKey(tenant: tenant, user: user)
        let (answer, keyBytes, pid) = try RealmRules.beginRegistration(blinded: blinded, counter: evaluationCounter)
        let t = now().timeIntervalSince1970
        let limits = self.limits
        let sealed = try RealmRules.sealPendingKey(keyBytes, pendingRowID: pid, recordKey: rk, crypto: crypto)
        try await write(lock: rk) { tx in
            try await tx.exec("INSERT INTO pending (id, record, created, expires, sealed) VALUES (\(pid), \(rk), \(t), \(t + limits.pendingLifetime), \(sealed))")
            try await tx.exec("""
                DELETE FROM pending WHERE record = \(rk) AND id NOT IN
                  (SELECT id FROM pending WHERE record = \(rk) AND expires > \(t) ORDER BY created DESC, id LIMIT \(limits.pendingPerUser))
                """)
        }
        return answer
    }

    @discardableResult
    public func completeRegistration(tenant: String, user: String, pendingID: Data, expectedVersion: Data?, fields: RegistrationFields,
                                     replace: RealmStore.ReplaceAuthority) async throws -> RealmStore.RegistrationOutcome {
        let rk = recordKey(tenant: tenant, user: user)
        let pid = RealmRules.sha256(pendingID)
        let t = now().timeIntervalSince1970
        let x = self.x
        let realmID = self.realmID
        return try await write(lock: rk) { tx in
            guard let prow = try await tx.one("SELECT record, expires, sealed FROM pending WHERE id = \(pid)") else { throw RealmRefusal.badPending }
            let (precord, pexpires, psealed) = try prow.decode((Data, Double, Data).self)
            guard RealmRules.pendingValid(record: precord, expires: pexpires, recordKey: rk, at: t) else { throw RealmRefusal.badPending }
            let oprfKey = try RealmRules.openPendingKey(psealed, pendingRowID: pid, recordKey: rk, crypto: self.crypto)
            let current = try await self.loadRecord(tx, rk)
            let (outcome, resets) = try RealmRules.replacement(of: current?.record, expectedVersion: expectedVersion, newVersion: fields.version,
                                                               replace: replace, realmID: realmID, pendingID: pendingID)
            let spent = try await tx.exec("DELETE FROM pending WHERE id = \(pid) RETURNING 1")
            guard spent == 1 else { throw StoreConflict() }
            let record = try RealmRules.registeredRecord(fields, oprfKey: oprfKey, x: x, replacing: current?.record, resets: resets)
            try await self.storeRecord(tx, rk, old: current?.gen, record, lockAt: nil)
            try await tx.exec("DELETE FROM challenge WHERE record = \(rk)")
            return outcome
        }
    }

    public func resetCount(tenant: String, user: String) async throws -> Int {
        let rk = recordKey(tenant: tenant, user: user)
        return try await read { tx in try await self.loadRecord(tx, rk)?.record.resets ?? 0 }
    }

    public func delete(tenant: String, user: String, ticket: Data, expectedVersion: Data) async throws {
        let rk = recordKey(tenant: tenant, user: user)
        let tid = RealmRules.sha256(ticket)
        let t = now().timeIntervalSince1970
        try await write(lock: rk) { tx in
            guard let tr = try await self.loadTicket(tx, tid), tr.admits(recordKey: rk, scope: .delete, at: t) else { throw RealmRefusal.badTicket }
            guard tr.sealed == nil else { throw RealmRefusal.ticketReused }
            guard let row = try await self.loadRecord(tx, rk) else { throw RealmRefusal.notRegistered }
            guard row.record.version == expectedVersion else { throw RealmRefusal.versionMismatch }
            try await self.spendTicket(tx, tid, sealed: try RealmRules.sealSpentTicket(ticketID: tid, recordKey: rk, crypto: self.crypto))
            try await tx.exec("DELETE FROM record WHERE id = \(rk) AND gen = \(row.gen)")
            try await tx.exec("DELETE FROM challenge WHERE record = \(rk)")
            try await tx.exec("DELETE FROM pending WHERE record = \(rk)")
        }
    }

    @discardableResult
    public func sweep() async throws -> Int {
        let t = now().timeIntervalSince1970
        let due: [Data] = try await write(lock: nil) { tx in
            try await tx.exec("DELETE FROM ticket WHERE expires <= \(t)")
            try await tx.exec("DELETE FROM challenge WHERE expires <= \(t)")
            try await tx.exec("DELETE FROM pending WHERE expires <= \(t)")
            try await tx.exec("DELETE FROM served WHERE expires <= \(t)")
            return try await tx.rows("SELECT id FROM record WHERE lockat IS NOT NULL AND lockat <= \(t)").map { try $0.decode(Data.self) }
        }
        var n = 0
        for rk in due {
            // Each under its user's lock, re-read: another process may have unlocked or destroyed it meanwhile.
            let destroyed = try await write(lock: rk) { tx -> Bool in
                guard let row = try await self.loadRecord(tx, rk) else { return false }
                return try await self.applyDestruction(tx, rk, row, at: t)
            }
            if destroyed { n += 1 }
        }
        return n
    }

    public func peekStatus(tenant: String, user: String) async throws -> RecordStatus {
        let rk = recordKey(tenant: tenant, user: user)
        return try await read { tx in RealmRules.status(of: try await self.loadRecord(tx, rk)?.record) }
    }

    public func readHeads(tenant: String, user: String) async throws -> (ticket: Data, heads: [StoredHead]) {
        let rk = recordKey(tenant: tenant, user: user)
        let ticket = RealmRules.random(32)
        let t = now().timeIntervalSince1970
        let expires = t + limits.ticketLifetime
        let tid = RealmRules.sha256(ticket)
        let rows = try await write(lock: rk) { tx -> [HeadRow] in
            try await tx.exec("INSERT INTO ticket (id, record, scope, expires, sealed) VALUES (\(tid), \(rk), \(VaultScope.head.rawValue), \(expires), NULL)")
            var out: [HeadRow] = []
            for row in try await tx.rows("SELECT id, sealed FROM head WHERE record = \(rk)") {
                let (id, sealed) = try row.decode((Data, Data).self)
                out.append(try RealmRules.openHead(sealed, rowID: id, recordKey: rk, crypto: self.crypto))
            }
            return out
        }
        return (ticket, RealmRules.storedHeads(rows))
    }

    public func writeHead(tenant: String, user: String, ticket: Data, slotID: Data, seq: UInt64,
                          writeAuth: Data, sealedHead: Data) async throws -> UInt64 {
        let rk = recordKey(tenant: tenant, user: user)
        let w = RealmRules.HeadWrite(recordKey: rk, ticket: ticket, slotID: slotID, seq: seq, writeAuth: writeAuth,
                                     sealedHead: sealedHead, crypto: crypto)
        let (tid, rowID, head) = (w.ticketID, w.rowID, w.head)
        let t = now().timeIntervalSince1970
        let idleBefore = RealmRules.headIdleBefore(t, limits: limits)
        return try await write(lock: rk) { tx in
            guard let tr = try await self.loadTicket(tx, tid), tr.admits(recordKey: rk, scope: .head, at: t) else { throw HeadRefusal.badTicket }
            guard tr.sealed == nil else { throw HeadRefusal.ticketReused }
            if let row = try await tx.one("SELECT sealed FROM head WHERE id = \(rowID)") {
                let stored = try RealmRules.openHead(try row.decode(Data.self), rowID: rowID, recordKey: rk, crypto: self.crypto)
                if try RealmRules.acceptHeadWrite(head, over: stored) {
                    let sealed = try RealmRules.sealHead(head, rowID: rowID, recordKey: rk, crypto: self.crypto)
                    try await tx.exec("UPDATE head SET updated = \(t), sealed = \(sealed) WHERE id = \(rowID)")
                }
            } else {
                let count = try await tx.one("SELECT COUNT(*) FROM head WHERE record = \(rk)").map { try $0.decode(Int64.self) } ?? 0
                if RealmRules.headSlotsFull(Int(count)) {
                    guard let idle = try await tx.one("SELECT id FROM head WHERE record = \(rk) AND updated < \(idleBefore) ORDER BY updated LIMIT 1")
                    else { throw HeadRefusal.tooManySlots }
                    try await tx.exec("DELETE FROM head WHERE id = \(try idle.decode(Data.self))")
                }
                let sealed = try RealmRules.sealHead(head, rowID: rowID, recordKey: rk, crypto: self.crypto)
                try await tx.exec("INSERT INTO head (id, record, updated, sealed) VALUES (\(rowID), \(rk), \(t), \(sealed))")
            }
            try await self.spendTicket(tx, tid, sealed: try RealmRules.sealSpentTicket(ticketID: tid, recordKey: rk, crypto: self.crypto))
            return seq
        }
    }

    public func hasServed(requestID: Data) async throws -> Bool {
        let t = now().timeIntervalSince1970
        return try await read { tx in try await tx.one("SELECT 1 FROM served WHERE id = \(requestID) AND expires > \(t)") != nil }
    }

    public func servedCount() async throws -> Int {
        try await read { tx in Int(try await tx.one("SELECT COUNT(*) FROM served").map { try $0.decode(Int64.self) } ?? 0) }
    }

    public func checkReady() async throws {
        try await checkReady(timeout: .seconds(3))
    }

    /// `SELECT 1` within `timeout`; the error says what to check (never the password).
    func checkReady(timeout: Duration) async throws {
        let location = self.location
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    try await self.read { tx in _ = try await tx.exec("SELECT 1") }
                }
                group.addTask {
                    try await Task.sleep(for: timeout)
                    throw RealmStoreUnavailable("no answer within \(timeout)")
                }
                try await group.next()
                group.cancelAll()
            }
        } catch {
            throw RealmStoreUnavailable(
                "cannot reach the PostgreSQL database \(location): \(Self.describe(error)). Check that the server runs and accepts connections from this host for user '\(location.user)' on database '\(location.database)' (the password comes from the store URL or PGPASSWORD)")
        }
    }

    /// What went wrong, without anything a query carried (PSQLError hides everything by default).
    static func describe(_ error: any Error) -> String {
        if let e = error as? RealmStoreUnavailable { return e.description }
        guard let p = error as? PSQLError else { return "\(error)" }
        var parts = ["\(p.code)"]
        if let m = p.serverInfo?[.message] { parts.append(m) }
        if let s = p.serverInfo?[.sqlState] { parts.append("SQLSTATE \(s)") }
        if let u = p.underlying { parts.append("\(u)") }
        return parts.joined(separator: ": ")
    }

    public func exportRows() async throws -> RealmRows {
        try await read { tx in
            var r = RealmRows()
            for row in try await tx.rows("SELECT id, gen, lockat, sealed FROM record") {
                let (id, gen, lockAt, sealed) = try row.decode((Data, Int64, Double?, Data).self)
                r.records.append(.init(id: id, gen: gen, lockAt: lockAt, sealed: sealed))
            }
            for row in try await tx.rows("SELECT id, record, created, expires, sealed FROM pending") {
                let (id, rec, created, expires, sealed) = try row.decode((Data, Data, Double, Double, Data).self)
                r.pending.append(.init(id: id, record: rec, created: created, expires: expires, sealed: sealed))
            }
            for row in try await tx.rows("SELECT id, record, scope, expires, sealed FROM ticket") {
                let (id, rec, scope, expires, sealed) = try row.decode((Data, Data, String, Double, Data?).self)
                r.tickets.append(.init(id: id, record: rec, scope: scope, expires: expires, sealed: sealed))
            }
            for row in try await tx.rows("SELECT id, record, created, expires, outcome FROM challenge") {
                let (id, rec, created, expires, outcome) = try row.decode((Data, Data, Double, Double, Data?).self)
                r.challenges.append(.init(id: id, record: rec, created: created, expires: expires, outcome: outcome))
            }
            for row in try await tx.rows("SELECT id, record, updated, sealed FROM head") {
                let (id, rec, updated, sealed) = try row.decode((Data, Data, Double, Data).self)
                r.heads.append(.init(id: id, record: rec, updated: updated, sealed: sealed))
            }
            for row in try await tx.rows("SELECT id, expires FROM served") {
                let (id, expires) = try row.decode((Data, Double).self)
                r.served.append(.init(id: id, expires: expires))
            }
            return r
        }
    }

    public func importRows(_ rows: RealmRows) async throws {
        let location = self.location
        try await write(lock: nil) { tx in
            let existing = try await tx.one("SELECT COUNT(*) FROM record").map { try $0.decode(Int64.self) } ?? 0
            guard existing == 0 else {
                throw RealmMigrationError("the target store \(location) already holds \(existing) records; migrate only into an empty store")
            }
            for x in rows.records {
                try await tx.exec("INSERT INTO record (id, gen, lockat, sealed) VALUES (\(x.id), \(x.gen), \(x.lockAt), \(x.sealed))")
            }
            for x in rows.pending {
                try await tx.exec("INSERT INTO pending (id, record, created, expires, sealed) VALUES (\(x.id), \(x.record), \(x.created), \(x.expires), \(x.sealed))")
            }
            for x in rows.tickets {
                try await tx.exec("INSERT INTO ticket (id, record, scope, expires, sealed) VALUES (\(x.id), \(x.record), \(x.scope), \(x.expires), \(x.sealed))")
            }
            for x in rows.challenges {
                try await tx.exec("INSERT INTO challenge (id, record, created, expires, outcome) VALUES (\(x.id), \(x.record), \(x.created), \(x.expires), \(x.outcome))")
            }
            for x in rows.heads {
                try await tx.exec("INSERT INTO head (id, record, updated, sealed) VALUES (\(x.id), \(x.record), \(x.updated), \(x.sealed))")
            }
            for x in rows.served {
                try await tx.exec("INSERT INTO served (id, expires) VALUES (\(x.id), \(x.expires)) ON CONFLICT (id) DO NOTHING")
            }
        }
    }

    public func close() async {
        let task = runner.withLock { t -> Task<Void, Never>? in
            defer { t = nil }
            return t
        }
        task?.cancel()
        await task?.value
    }
}
#endif
