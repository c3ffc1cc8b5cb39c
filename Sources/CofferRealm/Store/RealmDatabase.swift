import CofferVault
import Foundation

/// Everything a realm persists, behind one protocol: records (with their guess counters), tickets,
/// challenges, pending registrations, anchored heads and the replay cache. ``RealmService`` uses
/// nothing else. Two stores conform: ``RealmStore`` (one SQLite file, the default) and
/// `PostgresRealmStore` (PostgreSQL through postgres-nio; several realm processes may share it).
///
/// Every operation that changes state is one transaction that is durable before the method returns,
/// so the caller answers only what is already stored. The security-relevant guarantees every
/// conforming store keeps, also under concurrency (one process or several), and which the
/// conformance suite checks on both stores:
///
/// - a guess (Q1) is counted durably before its answer is returned, and never twice for an
///   identical retry;
/// - a ticket is spent at most once; a challenge is spent at most once;
/// - at most `L` guesses per record are answered per epoch, however many arrive at once;
/// - R2 replaces a registration atomically (compare on the version read, in one transaction);
/// - a request's replay mark (``RequestMark``) is inserted in the transaction of its first write,
///   and kept when the operation is refused.
///
/// Values are sealed by the realm (``RecordCrypto``, keys from `realm.key`) before they reach the
/// store: a store, and the operator of its database, sees only sealed bytes and keyed row ids.
public protocol RealmDatabase: Sendable {
    /// Lifetimes and limits the store enforces.
    var limits: RealmStore.Limits { get }
    /// A short description for logs and errors (never a password).
    var storeDescription: String { get }

    /// The record key of a user (keyed by the realm's storage key).
    func recordKey(tenant: String, user: String) -> Data
    /// A short pseudonymous reference for audit logs.
    func auditRef(tenant: String, user: String) -> String

    /// VOPRF evaluations performed since the store was opened (Q1 and R1).
    var oprfEvaluations: Int { get }
    /// (commits, transactions in them) since start: group commit on SQLite; equal on PostgreSQL.
    var commitCounts: (batches: Int, jobs: Int) { get }

    /// Q0: status and a fresh ticket for `scope`; applies the destruction rule first.
    func query(tenant: String, user: String, scope: VaultScope) async throws -> (status: RecordStatus, ticket: Data, destroyed: Bool)
    /// Q1: spends the ticket and one guess in one durable transaction.
    func guess(tenant: String, user: String, ticket: Data, version: Data, blinded: Data) async throws -> (answer: GuessAnswer, retried: Bool, lastGuess: Bool)
    /// Q2: spends the named challenge.
    func unlock(tenant: String, user: String, version: Data, challenge: Data, proof: Data) async throws -> UnlockOutcome
    /// R1: a pending registration.
    func beginRegistration(tenant: String, user: String, blinded: Data) async throws -> PendingAnswer
    /// R2: spends the pending registration and replaces the record atomically.
    @discardableResult
    func completeRegistration(tenant: String, user: String, pendingID: Data, expectedVersion: Data?, fields: RegistrationFields,
                              replace: RealmStore.ReplaceAuthority) async throws -> RealmStore.RegistrationOutcome
    /// Counted resets of the user's record (0 without one).
    func resetCount(tenant: String, user: String) async throws -> Int
    /// Delete: spends a `delete` ticket and removes the record.
    func delete(tenant: String, user: String, ticket: Data, expectedVersion: Data) async throws
    /// Housekeeping; returns the number of records destroyed.
    @discardableResult
    func sweep() async throws -> Int
    /// Raw status read (no ticket, no destruction).
    func peekStatus(tenant: String, user: String) async throws -> RecordStatus
    /// Head read: a `head` ticket and the user's slots.
    func readHeads(tenant: String, user: String) async throws -> (ticket: Data, heads: [StoredHead])
    /// Head write: spends the `head` ticket and stores the slot.
    func writeHead(tenant: String, user: String, ticket: Data, slotID: Data, seq: UInt64,
                   writeAuth: Data, sealedHead: Data) async throws -> UInt64
    /// Whether a request with this id was already served and is still remembered.
    func hasServed(requestID: Data) async throws -> Bool
    /// Number of remembered requests.
    func servedCount() async throws -> Int

    /// Throws unless the store can serve requests now (readiness: a trivial query, bounded in time).
    func checkReady() async throws
    /// Every row of every table, as stored (sealed values stay sealed): for `coffer realm migrate`.
    func exportRows() async throws -> RealmRows
    /// Writes `rows` into an empty store in one transaction; refuses a store that holds any record.
    func importRows(_ rows: RealmRows) async throws
    /// Closes the store (connections, pool). Later calls fail.
    func close() async
}

extension RealmDatabase {
    @discardableResult
    public func completeRegistration(tenant: String, user: String, pendingID: Data, expectedVersion: Data?,
                                     fields: RegistrationFields) async throws -> RealmStore.RegistrationOutcome {
        try await completeRegistration(tenant: tenant, user: user, pendingID: pendingID, expectedVersion: expectedVersion,
                                       fields: fields, replace: RealmStore.ReplaceAuthority(proof: Data(), reset: false))
    }
}

/// A realm's tables as stored, store-independent: what `coffer realm migrate` copies and compares.
/// Sealed values are bound to their record key, generation, table and row id, never to the store,
/// so they move between stores unchanged (and still open only with the same `realm.key`).
public struct RealmRows: Sendable, Equatable {
    public struct Record: Sendable, Equatable { public var id: Data; public var gen: Int64; public var lockAt: Double?; public var sealed: Data }
    public struct Pending: Sendable, Equatable { public var id: Data; public var record: Data; public var created: Double; public var expires: Double; public var sealed: Data }
    public struct Ticket: Sendable, Equatable { public var id: Data; public var record: Data; public var scope: String; public var expires: Double; public var sealed: Data? }
    public struct Challenge: Sendable, Equatable { public var id: Data; public var record: Data; public var created: Double; public var expires: Double; public var outcome: Data? }
    public struct Head: Sendable, Equatable { public var id: Data; public var record: Data; public var updated: Double; public var sealed: Data }
    public struct Served: Sendable, Equatable { public var id: Data; public var expires: Double }

    public var records: [Record] = []
    public var pending: [Pending] = []
    public var tickets: [Ticket] = []
    public var challenges: [Challenge] = []
    public var heads: [Head] = []
    public var served: [Served] = []

    public init() {}

    /// Every table sorted by id, so two exports compare row by row.
    public func sorted() -> RealmRows {
        func less(_ a: Data, _ b: Data) -> Bool { a.lexicographicallyPrecedes(b) }
        var r = self
        r.records.sort { less($0.id, $1.id) }
        r.pending.sort { less($0.id, $1.id) }
        r.tickets.sort { less($0.id, $1.id) }
        r.challenges.sort { less($0.id, $1.id) }
        r.heads.sort { less($0.id, $1.id) }
        r.served.sort { less($0.id, $1.id) }
        return r
    }

    /// Rows per table, for reports.
    public var counts: [(table: String, rows: Int)] {
        [("record", records.count), ("pending", pending.count), ("ticket", tickets.count),
         ("challenge", challenges.count), ("head", heads.count), ("served", served.count)]
    }
}

/// The store is not ready (readiness probe), with a reason safe to show the operator.
public struct RealmStoreUnavailable: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
