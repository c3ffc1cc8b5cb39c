import Crypto
import Foundation
import GRDB
import Synchronization

/// The replay cache: every request that changed the realm's state is remembered by the identity of
/// its HPKE encapsulation (`SHA-256(keyID ‖ enc)`), durably, **in the same transaction as its
/// change**, until its token expires (or, for a request that spends a single-use value, until that
/// value has expired for sure). A byte-identical replay of it is refused and changes nothing, also
/// after a restart. A request that changed nothing is not remembered: replaying it is the same as
/// delivering it late, which the network can do anyway.
///
/// How it reaches the transaction without widening every store method: the service runs the
/// store operation inside `RequestMark.$current.withValue(mark)`; the first group-committed write
/// that operation makes inserts the mark first (outside the operation's own savepoint, so a
/// refusal that rolls the operation back keeps the mark). If the mark is already there, the write
/// fails with `ReplayedRequest` and the operation's body does not run.
public final class RequestMark: Sendable {
    /// `SHA-256(keyID ‖ enc)` of the request.
    public let id: Data
    /// When the mark may be forgotten (seconds since 1970).
    public let expires: Double
    private let taken = Mutex(false)

    public init(id: Data, expires: Date) {
        self.id = id
        self.expires = expires.timeIntervalSince1970
    }

    /// The identity of a sealed request: `SHA-256(keyID ‖ enc)` (its first 4 + 1120 bytes). The
    /// encapsulation is fresh for every sealing and cannot be altered without the request failing to
    /// open, so equal ids mean the same sealed request.
    public static func id<C: Collection>(ofSealedRequest request: C, prefixLength: Int) -> Data where C.Element == UInt8 {
        Data(SHA256.hash(data: Array(request.prefix(prefixLength))))
    }

    /// The mark of the task's current request, if it was not inserted yet (one insert per request).
    @TaskLocal public static var current: RequestMark?

    func take() -> RequestMark? {
        taken.withLock { t in
            if t { return nil }
            t = true
            return self
        }
    }
}

/// The request was already served (a byte-identical replay): nothing was done.
public struct ReplayedRequest: Error, Sendable, Equatable {}

extension RealmStore {
    /// Whether a request with this id was already served and is still remembered (a read: lets the
    /// service refuse a replay before any token check or curve operation).
    public func hasServed(requestID: Data) async throws -> Bool {
        let t = now().timeIntervalSince1970
        return try await pool.read { db in
            try GRDB.Row.fetchOne(db, sql: "SELECT 1 FROM served WHERE id = ? AND expires > ?", arguments: [requestID, t]) != nil
        }
    }

    /// Number of remembered requests (tests, metrics).
    public func servedCount() async throws -> Int {
        try await pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM served") ?? 0 }
    }

    static func registerReplayMigration(_ m: inout DatabaseMigrator) {
        m.registerMigration("v3-served") { db in
            try db.execute(sql: """
                CREATE TABLE served (id BLOB PRIMARY KEY, expires REAL NOT NULL) WITHOUT ROWID;
                CREATE INDEX served_expires ON served(expires);
                """)
        }
    }

    /// Inserts `mark` inside the current transaction; throws `ReplayedRequest` if it is there.
    static func insertMark(_ mark: RequestMark, _ db: Database) throws {
        try db.execute(sql: "INSERT OR IGNORE INTO served (id, expires) VALUES (?, ?)", arguments: [mark.id, mark.expires])
        guard db.changesCount == 1 else { throw ReplayedRequest() }
    }

    /// Sweep part: forgets marks whose tokens have expired.
    static func sweepMarks(_ db: Database, at t: Double) throws {
        try db.execute(sql: "DELETE FROM served WHERE expires <= ?", arguments: [t])
    }
}
