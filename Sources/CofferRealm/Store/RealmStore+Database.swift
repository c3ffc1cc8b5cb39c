import Foundation
import GRDB

/// The SQLite store as a ``RealmDatabase``: the operations are RealmStore's own; this adds
/// readiness, the row export and import `coffer realm migrate` uses, and close.
extension RealmStore: RealmDatabase {
    public var storeDescription: String { "SQLite \(pool.path)" }

    public func checkReady() async throws {
        do {
            _ = try await pool.read { db in try Int.fetchOne(db, sql: "SELECT 1") }
        } catch {
            throw RealmStoreUnavailable("the SQLite database \(pool.path) cannot be read: \(error)")
        }
    }

    public func exportRows() async throws -> RealmRows {
        try await pool.read { db in
            var r = RealmRows()
            for row in try GRDB.Row.fetchAll(db, sql: "SELECT id, gen, lockAt, sealed FROM record") {
                r.records.append(.init(id: row["id"], gen: row["gen"], lockAt: row["lockAt"], sealed: row["sealed"]))
            }
            for row in try GRDB.Row.fetchAll(db, sql: "SELECT id, record, created, expires, sealed FROM pending") {
                r.pending.append(.init(id: row["id"], record: row["record"], created: row["created"], expires: row["expires"], sealed: row["sealed"]))
            }
            for row in try GRDB.Row.fetchAll(db, sql: "SELECT id, record, scope, expires, sealed FROM ticket") {
                r.tickets.append(.init(id: row["id"], record: row["record"], scope: row["scope"], expires: row["expires"], sealed: row["sealed"]))
            }
            for row in try GRDB.Row.fetchAll(db, sql: "SELECT id, record, created, expires, outcome FROM challenge") {
                r.challenges.append(.init(id: row["id"], record: row["record"], created: row["created"], expires: row["expires"], outcome: row["outcome"]))
            }
            for row in try GRDB.Row.fetchAll(db, sql: "SELECT id, record, updated, sealed FROM head") {
                r.heads.append(.init(id: row["id"], record: row["record"], updated: row["updated"], sealed: row["sealed"]))
            }
            for row in try GRDB.Row.fetchAll(db, sql: "SELECT id, expires FROM served") {
                r.served.append(.init(id: row["id"], expires: row["expires"]))
            }
            return r
        }
    }

    public func importRows(_ rows: RealmRows) async throws {
        try await pool.write { db in
            let existing = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM record") ?? 0
            guard existing == 0 else { throw RealmMigrationError("the target SQLite store \(self.pool.path) already holds \(existing) records; migrate only into an empty store") }
            for x in rows.records {
                try db.execute(sql: "INSERT INTO record (id, gen, lockAt, sealed) VALUES (?, ?, ?, ?)", arguments: [x.id, x.gen, x.lockAt, x.sealed])
            }
            for x in rows.pending {
                try db.execute(sql: "INSERT INTO pending (id, record, created, expires, sealed) VALUES (?, ?, ?, ?, ?)",
                               arguments: [x.id, x.record, x.created, x.expires, x.sealed])
            }
            for x in rows.tickets {
                try db.execute(sql: "INSERT INTO ticket (id, record, scope, expires, sealed) VALUES (?, ?, ?, ?, ?)",
                               arguments: [x.id, x.record, x.scope, x.expires, x.sealed])
            }
            for x in rows.challenges {
                try db.execute(sql: "INSERT INTO challenge (id, record, created, expires, outcome) VALUES (?, ?, ?, ?, ?)",
                               arguments: [x.id, x.record, x.created, x.expires, x.outcome])
            }
            for x in rows.heads {
                try db.execute(sql: "INSERT INTO head (id, record, updated, sealed) VALUES (?, ?, ?, ?)",
                               arguments: [x.id, x.record, x.updated, x.sealed])
            }
            for x in rows.served {
                try db.execute(sql: "INSERT INTO served (id, expires) VALUES (?, ?)", arguments: [x.id, x.expires])
            }
        }
    }

    public func close() async {
        try? pool.close()
    }
}

/// `coffer realm migrate` could not copy or verify (a message for the operator).
public struct RealmMigrationError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
