import CofferVault
import Foundation

/// Forwards every call to a store and records its latency and failures in the realm's metrics
/// (`coffer_realm_store_duration_seconds{op}`, `coffer_realm_store_errors_total{op}`). A refusal
/// (a deliberate answer such as `badTicket`) is not an error; a failure to read or commit is.
/// Q1 and R1 include their VOPRF evaluation (about 3 ms), which runs outside the transaction.
final class MeasuredRealmDatabase: RealmDatabase {
    let base: any RealmDatabase
    let metrics: RealmMetrics

    init(_ base: any RealmDatabase, metrics: RealmMetrics) {
        self.base = base
        self.metrics = metrics
    }

    private func measure<T>(_ op: String, _ body: () async throws -> T) async throws -> T {
        let start = ContinuousClock.now
        do {
            let v = try await body()
            metrics.recordStore(op: op, duration: ContinuousClock.now - start)
            return v
        } catch {
            metrics.recordStore(op: op, duration: ContinuousClock.now - start)
            if !(error is RealmRefusal || error is HeadRefusal || error is ReplayedRequest) { metrics.storeError(op: op) }
            throw error
        }
    }

    var limits: RealmStore.Limits { base.limits }
    var storeDescription: String { base.storeDescription }
    func recordKey(tenant: String, user: String) -> Data { base.recordKey(tenant: tenant, user: user) }
    func auditRef(tenant: String, user: String) -> String { base.auditRef(tenant: tenant, user: user) }
    var oprfEvaluations: Int { base.oprfEvaluations }
    var commitCounts: (batches: Int, jobs: Int) { base.commitCounts }

    func query(tenant: String, user: String, scope: VaultScope) async throws -> (status: RecordStatus, ticket: Data, destroyed: Bool) {
        try await measure("q0") { try await base.query(tenant: tenant, user: user, scope: scope) }
    }
    func guess(tenant: String, user: String, ticket: Data, version: Data, blinded: Data) async throws -> (answer: GuessAnswer, retried: Bool, lastGuess: Bool) {
        try await measure("q1") { try await base.guess(tenant: tenant, user: user, ticket: ticket, version: version, blinded: blinded) }
    }
    func unlock(tenant: String, user: String, version: Data, challenge: Data, proof: Data) async throws -> UnlockOutcome {
        try await measure("q2") { try await base.unlock(tenant: tenant, user: user, version: version, challenge: challenge, proof: proof) }
    }
    func beginRegistration(tenant: String, user: String, blinded: Data) async throws -> PendingAnswer {
        try await measure("r1") { try await base.beginRegistration(tenant: tenant, user: user, blinded: blinded) }
    }
    @discardableResult
    func completeRegistration(tenant: String, user: String, pendingID: Data, expectedVersion: Data?, fields: RegistrationFields,
                              replace: RealmStore.ReplaceAuthority) async throws -> RealmStore.RegistrationOutcome {
        try await measure("r2") {
            try await base.completeRegistration(tenant: tenant, user: user, pendingID: pendingID, expectedVersion: expectedVersion,
                                                fields: fields, replace: replace)
        }
    }
    func resetCount(tenant: String, user: String) async throws -> Int {
        try await measure("read") { try await base.resetCount(tenant: tenant, user: user) }
    }
    func delete(tenant: String, user: String, ticket: Data, expectedVersion: Data) async throws {
        try await measure("delete") { try await base.delete(tenant: tenant, user: user, ticket: ticket, expectedVersion: expectedVersion) }
    }
    @discardableResult
    func sweep() async throws -> Int {
        try await measure("sweep") { try await base.sweep() }
    }
    func peekStatus(tenant: String, user: String) async throws -> RecordStatus {
        try await measure("read") { try await base.peekStatus(tenant: tenant, user: user) }
    }
    func readHeads(tenant: String, user: String) async throws -> (ticket: Data, heads: [StoredHead]) {
        try await measure("head_read") { try await base.readHeads(tenant: tenant, user: user) }
    }
    func writeHead(tenant: String, user: String, ticket: Data, slotID: Data, seq: UInt64, writeAuth: Data, sealedHead: Data) async throws -> UInt64 {
        try await measure("head_write") {
            try await base.writeHead(tenant: tenant, user: user, ticket: ticket, slotID: slotID, seq: seq, writeAuth: writeAuth, sealedHead: sealedHead)
        }
    }
    func hasServed(requestID: Data) async throws -> Bool {
        try await measure("replay_check") { try await base.hasServed(requestID: requestID) }
    }
    func servedCount() async throws -> Int {
        try await measure("read") { try await base.servedCount() }
    }
    func checkReady() async throws {
        try await measure("ready") { try await base.checkReady() }
    }
    func exportRows() async throws -> RealmRows { try await base.exportRows() }
    func importRows(_ rows: RealmRows) async throws { try await base.importRows(rows) }
    func close() async { await base.close() }
}
