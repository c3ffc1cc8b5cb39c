import Foundation

/// `coffer realm migrate`: copies every row of one store into another, empty, store (SQLite to
/// PostgreSQL or back), then reads the target back and compares it with the source row by row, and
/// opens every record with the realm's key. Rows move as stored: the seals bind a value to its record
/// key, generation, table and row id, never to a store, so nothing is decrypted to be copied.
public enum RealmMigration {
    public struct Report: Sendable {
        /// Rows per table, copied and compared.
        public var counts: [(table: String, rows: Int)]
        /// Records (and tombstones) opened with the realm's key in the target.
        public var records: Int
    }

    /// Runs the migration. Stop every realm process using `from` first.
    /// - Throws: ``RealmMigrationError`` naming the first table and row that differ, or a record that
    ///   does not open; ``RealmStoreUnavailable`` when a store cannot be reached.
    public static func run(keys: RealmKeys, config: RealmConfig, from: RealmStoreLocation, to: RealmStoreLocation) async throws -> Report {
        let source = try await from.open(keys: keys, config: config)
        let target: any RealmDatabase
        do {
            target = try await to.open(keys: keys, config: config)
        } catch {
            await source.close()
            throw error
        }
        do {
            let report = try await copy(keys: keys, from: source, to: target)
            await source.close()
            await target.close()
            return report
        } catch {
            await source.close()
            await target.close()
            throw error
        }
    }

    /// Copies and checks between two opened stores.
    public static func copy(keys: RealmKeys, from source: any RealmDatabase, to target: any RealmDatabase) async throws -> Report {
        let rows = try await source.exportRows().sorted()
        let crypto = RecordCrypto(storageKey: keys.storageKey)
        // Refuse a source that does not belong to this key file before writing anything.
        for r in rows.records {
            do { _ = try crypto.openRecord(r.sealed, recordKey: r.id, gen: r.gen) } catch {
                throw RealmMigrationError("record \(hexPrefix(r.id)) in the source does not open with this realm's key (wrong --dir, or an altered database); nothing was copied")
            }
        }
        try await target.importRows(rows)
        let back = try await target.exportRows().sorted()
        try compare(rows, back)
        var opened = 0
        for r in back.records {
            do { _ = try crypto.openRecord(r.sealed, recordKey: r.id, gen: r.gen) } catch {
                throw RealmMigrationError("record \(hexPrefix(r.id)) does not open in the target after the copy")
            }
            opened += 1
        }
        return Report(counts: back.counts, records: opened)
    }

    /// Compares two sorted exports table by table, row by row; throws at the first difference.
    public static func compare(_ a: RealmRows, _ b: RealmRows) throws {
        func check<T: Equatable>(_ table: String, _ x: [T], _ y: [T], id: (T) -> Data) throws {
            guard x.count == y.count else {
                throw RealmMigrationError("table \(table): \(x.count) rows in the source, \(y.count) in the target")
            }
            for (l, r) in zip(x, y) where l != r {
                throw RealmMigrationError("table \(table): row \(hexPrefix(id(l))) differs between the source and the target")
            }
        }
        try check("record", a.records, b.records, id: \.id)
        try check("pending", a.pending, b.pending, id: \.id)
        try check("ticket", a.tickets, b.tickets, id: \.id)
        try check("challenge", a.challenges, b.challenges, id: \.id)
        try check("head", a.heads, b.heads, id: \.id)
        try check("served", a.served, b.served, id: \.id)
    }

    static func hexPrefix(_ d: Data) -> String { d.prefix(6).map { String(format: "%02x", $0) }.joined() + "…" }
}
