import CofferRealm
import CofferVault
import Crypto
import Foundation
import Testing

/// Which store a conformance test runs on.
enum StoreKind: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case sqlite, postgres
    var testDescription: String { rawValue }
}

/// One store under test: a realm folder (keys, config), a location, a hand-moved clock.
struct StoreFixture: Sendable {
    let dir: URL
    let keys: RealmKeys
    let config: RealmConfig
    let location: RealmStoreLocation
    let clock: RealmStoreTests.TestClock
    let limits: RealmStore.Limits

    /// Opens another instance on the same database (what a second realm process does).
    func open() async throws -> any RealmDatabase {
        let clock = self.clock
        return try await location.open(keys: keys, config: config, limits: limits, now: { clock.now })
    }

    /// Runs `body` with a fresh store of `kind` (PostgreSQL: a schema of its own on the suite's server).
    static func with(_ kind: StoreKind, limits adjust: (inout RealmStore.Limits) -> Void = { _ in },
                     _ body: (StoreFixture, any RealmDatabase) async throws -> Void) async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-conformance-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let (keys, config) = try RealmDirectory(dir).initialize(x: 1)
        var limits = RealmStore.Limits(guessLimit: 10)
        adjust(&limits)
        let clock = RealmStoreTests.TestClock()
        func run(_ location: RealmStoreLocation) async throws {
            let f = StoreFixture(dir: dir, keys: keys, config: config, location: location, clock: clock, limits: limits)
            let store = try await f.open()
            do {
                try await body(f, store)
                await store.close()
            } catch {
                await store.close()
                throw error
            }
        }
        switch kind {
        case .sqlite: try await run(.sqlite(RealmDirectory(dir).databaseFile))
        case .postgres: try await PostgresTestServer.withFreshSchema { try await run(.postgres($0)) }
        }
    }
}

/// The store conformance suite: every operation of ``RealmDatabase``, the security-relevant ones under
/// concurrency, on both stores (SQLite file; PostgreSQL server started for the suite).
@Suite("Realm store conformance", .postgresServer)
struct RealmStoreConformanceTests {
    static func fields(version: Data = Data(rnd(16)), tag: Data = Data(rnd(32)), guessLimit: Int = 10) -> RegistrationFields {
        RegistrationFields(version: version, c: Data(rnd(32)), commitment: Data(rnd(32)), vk: Data(rnd(32)), sig: Data(rnd(64)),
                           tag: tag, wrapped: Data(rnd(60)), policy: Data(VaultPolicy.default.bytes), guessLimit: guessLimit)
    }

    static func register(_ store: any RealmDatabase, user: String = "u", guessLimit: Int = 10, tag: Data = Data(rnd(32))) async throws -> Data {
        let r1 = try await store.beginRegistration(tenant: "t", user: user, blinded: try RealmStoreTests.blinded())
        let f = fields(tag: tag, guessLimit: guessLimit)
        try await store.completeRegistration(tenant: "t", user: user, pendingID: r1.pendingID, expectedVersion: nil, fields: f)
        return f.version
    }

    static func attemptsLeft(_ store: any RealmDatabase, _ user: String = "u") async throws -> Int? {
        if case .active(_, _, _, _, let left) = try await store.peekStatus(tenant: "t", user: user) { return left }
        return nil
    }

    static func proof(realmID: Data, tag: Data, version: Data, challenge: Data) -> Data {
        Data(HMAC<SHA256>.authenticationCode(for: Array("coffer-vault/v1/unlock-proof".utf8) + Array(realmID) + Array(version) + Array(challenge),
                                             using: SymmetricKey(data: tag)))
    }

    @Test("Q0 and R1/R2: status, tickets and a registration, read back", arguments: StoreKind.allCases)
    func registerAndQuery(kind: StoreKind) async throws {
        try await StoreFixture.with(kind) { _, store in
            #expect(try await store.peekStatus(tenant: "t", user: "u") == .notRegistered)
            let q = try await store.query(tenant: "t", user: "u", scope: .status)
            #expect(q.status == .notRegistered && q.ticket.count == 32 && !q.destroyed)
            let version = try await Self.register(store)
            let q2 = try await store.query(tenant: "t", user: "u", scope: .recover)
            guard case .active(let v, _, _, _, let left) = q2.status else { Issue.record("not active: \(q2.status)"); return }
            #expect(v == version && left == 10)
            #expect(try await store.resetCount(tenant: "t", user: "u") == 0)
            #expect(store.oprfEvaluations == 1)
        }
    }

    @Test("a guess is durable before its answer: a new store instance (a restarted process) sees it; an identical retry is free", arguments: StoreKind.allCases)
    func guessDurable(kind: StoreKind) async throws {
        try await StoreFixture.with(kind) { fixture, store in
            let version = try await Self.register(store)
            let q = try await store.query(tenant: "t", user: "u", scope: .recover)
            let blinded = try RealmStoreTests.blinded()
            let g = try await store.guess(tenant: "t", user: "u", ticket: q.ticket, version: version, blinded: blinded)
            #expect(!g.retried && g.answer.attemptsLeft == 9)
            // Another instance on the same database, opened after the answer: the guess is there.
            let other = try await fixture.open()
            #expect(try await Self.attemptsLeft(other) == 9)
            // The identical retry (its answer was lost) gets the same answer, no second increment, on either instance.
            let again = try await other.guess(tenant: "t", user: "u", ticket: q.ticket, version: version, blinded: blinded)
            #expect(again.retried && again.answer == g.answer)
            await other.close()
            #expect(try await Self.attemptsLeft(store) == 9)
            // Any other element on the spent ticket gets nothing.
            await #expect(throws: RealmRefusal.ticketReused) {
                _ = try await store.guess(tenant: "t", user: "u", ticket: q.ticket, version: version, blinded: try RealmStoreTests.blinded())
            }
            // A ticket of another scope or user, or a made-up one, is refused without an evaluation.
            let evaluations = store.oprfEvaluations
            let status = try await store.query(tenant: "t", user: "u", scope: .status)
            let foreign = try await store.query(tenant: "t", user: "v", scope: .recover)
            for ticket in [status.ticket, foreign.ticket, Data(rnd(32))] {
                await #expect(throws: RealmRefusal.badTicket) {
                    _ = try await store.guess(tenant: "t", user: "u", ticket: ticket, version: version, blinded: try RealmStoreTests.blinded())
                }
            }
            #expect(store.oprfEvaluations == evaluations)
            #expect(try await Self.attemptsLeft(store) == 9)
        }
    }

    @Test("one ticket, 16 concurrent guesses with different elements: spent once, one guess counted", arguments: StoreKind.allCases)
    func ticketSpentOnce(kind: StoreKind) async throws {
        try await StoreFixture.with(kind) { fixture, store in
            let version = try await Self.register(store)
            let second = try await fixture.open()
            let q = try await store.query(tenant: "t", user: "u", scope: .recover)
            let results = try await withThrowingTaskGroup(of: Bool.self) { group in
                for i in 0..<16 {
                    let s = i % 2 == 0 ? store : second
                    group.addTask {
                        do {
                            _ = try await s.guess(tenant: "t", user: "u", ticket: q.ticket, version: version, blinded: try RealmStoreTests.blinded())
                            return true
                        } catch RealmRefusal.ticketReused {
                            return false
                        }
                    }
                }
                return try await group.reduce(into: [Bool]()) { $0.append($1) }
            }
            await second.close()
            #expect(results.filter { $0 }.count == 1)
            #expect(try await Self.attemptsLeft(store) == 9)
        }
    }

    @Test("60 concurrent wrong guesses over two store instances: exactly L answered; then the record is destroyed", arguments: StoreKind.allCases)
    func atMostLUnderConcurrency(kind: StoreKind) async throws {
        try await StoreFixture.with(kind) { fixture, store in
            let tag = Data(rnd(32))
            let version = try await Self.register(store, tag: tag)
            let second = try await fixture.open()
            let answers = try await withThrowingTaskGroup(of: GuessAnswer?.self) { group in
                for i in 0..<60 {
                    let s = i % 2 == 0 ? store : second
                    group.addTask {
                        let q = try await s.query(tenant: "t", user: "u", scope: .recover)
                        do {
                            return try await s.guess(tenant: "t", user: "u", ticket: q.ticket, version: version, blinded: try RealmStoreTests.blinded()).answer
                        } catch RealmRefusal.noGuessesLeft {
                            return nil
                        }
                    }
                }
                return try await group.reduce(into: [GuessAnswer]()) { if let a = $1 { $0.append(a) } }
            }
            await second.close()
            #expect(answers.count == 10)
            #expect(Set(answers.map(\.attemptsLeft)) == Set(0..<10))
            #expect(try await Self.attemptsLeft(store) == 0)
            // Every challenge answered wrongly: the last one destroys the record.
            var outcomes: [UnlockOutcome] = []
            for a in answers {
                outcomes.append(try await store.unlock(tenant: "t", user: "u", version: version, challenge: a.challenge, proof: Data(rnd(32))))
            }
            #expect(outcomes.last == .destroyed)
            #expect(outcomes.dropLast().allSatisfy { $0 == .wrongProof(attemptsLeft: 0) })
            #expect(try await store.peekStatus(tenant: "t", user: "u") == .locked(version: version))
            let q = try await store.query(tenant: "t", user: "u", scope: .recover)
            await #expect(throws: RealmRefusal.locked) {
                _ = try await store.guess(tenant: "t", user: "u", ticket: q.ticket, version: version, blinded: try RealmStoreTests.blinded())
            }
        }
    }

    @Test("Q2: the right proof resets the count and returns W; a retry gets the same outcome; a challenge is spent once", arguments: StoreKind.allCases)
    func unlock(kind: StoreKind) async throws {
        try await StoreFixture.with(kind) { fixture, store in
            let tag = Data(rnd(32))
            let version = try await Self.register(store, tag: tag)
            var challenges: [Data] = []
            for _ in 0..<3 {
                let q = try await store.query(tenant: "t", user: "u", scope: .recover)
                challenges.append(try await store.guess(tenant: "t", user: "u", ticket: q.ticket, version: version, blinded: try RealmStoreTests.blinded()).answer.challenge)
            }
            #expect(try await Self.attemptsLeft(store) == 7)
            let wrong = Data(rnd(32))
            #expect(try await store.unlock(tenant: "t", user: "u", version: version, challenge: challenges[0], proof: wrong) == .wrongProof(attemptsLeft: 7))
            #expect(try await store.unlock(tenant: "t", user: "u", version: version, challenge: challenges[0], proof: wrong) == .wrongProof(attemptsLeft: 7))
            await #expect(throws: RealmRefusal.noChallenge) {
                _ = try await store.unlock(tenant: "t", user: "u", version: version, challenge: challenges[0], proof: Data(rnd(32)))
            }
            let right = Self.proof(realmID: fixture.keys.realmID, tag: tag, version: version, challenge: challenges[1])
            guard case .unlocked(let w) = try await store.unlock(tenant: "t", user: "u", version: version, challenge: challenges[1], proof: right) else {
                Issue.record("not unlocked"); return
            }
            #expect(w.count == 60)
            #expect(try await Self.attemptsLeft(store) == 10)
            #expect(try await store.unlock(tenant: "t", user: "u", version: version, challenge: challenges[1], proof: right) == .unlocked(wrapped: w))
            // The epoch ended: the other challenge is gone.
            await #expect(throws: RealmRefusal.noChallenge) {
                _ = try await store.unlock(tenant: "t", user: "u", version: version, challenge: challenges[2], proof: right)
            }
        }
    }

    @Test("R2 replaces atomically: of 4 concurrent replacements of one version (two store instances) exactly one lands; guesses carry over", arguments: StoreKind.allCases)
    func registrationReplacedAtomically(kind: StoreKind) async throws {
        try await StoreFixture.with(kind) { fixture, store in
            let version = try await Self.register(store)
            let q = try await store.query(tenant: "t", user: "u", scope: .recover)
            _ = try await store.guess(tenant: "t", user: "u", ticket: q.ticket, version: version, blinded: try RealmStoreTests.blinded())
            // Without proof and without a reset token: refused, nothing spent.
            let p0 = try await store.beginRegistration(tenant: "t", user: "u", blinded: try RealmStoreTests.blinded())
            await #expect(throws: RealmRefusal.replaceNotProven) {
                try await store.completeRegistration(tenant: "t", user: "u", pendingID: p0.pendingID, expectedVersion: version, fields: Self.fields())
            }
            let second = try await fixture.open()
            // The refused pending registration is still unspent; three more make the four a user may hold.
            var pendings: [Data] = [p0.pendingID]
            for _ in 0..<3 { pendings.append(try await store.beginRegistration(tenant: "t", user: "u", blinded: try RealmStoreTests.blinded()).pendingID) }
            let reset = RealmStore.ReplaceAuthority(proof: Data(), reset: true)
            let landed = try await withThrowingTaskGroup(of: Data?.self) { group in
                for (i, pid) in pendings.enumerated() {
                    let s = i % 2 == 0 ? store : second
                    group.addTask {
                        let f = Self.fields()
                        do {
                            try await s.completeRegistration(tenant: "t", user: "u", pendingID: pid, expectedVersion: version, fields: f, replace: reset)
                            return f.version
                        } catch RealmRefusal.versionMismatch {
                            return nil
                        }
                    }
                }
                return try await group.reduce(into: [Data]()) { if let v = $1 { $0.append(v) } }
            }
            await second.close()
            #expect(landed.count == 1)
            guard case .active(let v, _, _, _, let left) = try await store.peekStatus(tenant: "t", user: "u") else { Issue.record("not active"); return }
            #expect(v == landed.first && left == 9)
            #expect(try await store.resetCount(tenant: "t", user: "u") == 1)
        }
    }

    @Test("pending registrations: four per user, expiry, another user's refused", arguments: StoreKind.allCases)
    func pending(kind: StoreKind) async throws {
        try await StoreFixture.with(kind, limits: { $0.pendingLifetime = 1 }) { fixture, store in
            var p: [Data] = []
            for _ in 0..<6 {
                p.append(try await store.beginRegistration(tenant: "t", user: "u", blinded: try RealmStoreTests.blinded()).pendingID)
                fixture.clock.advance(0.01)
            }
            await #expect(throws: RealmRefusal.badPending) {
                try await store.completeRegistration(tenant: "t", user: "u", pendingID: p[1], expectedVersion: nil, fields: Self.fields())
            }
            await #expect(throws: RealmRefusal.badPending) {
                try await store.completeRegistration(tenant: "t", user: "v", pendingID: p[5], expectedVersion: nil, fields: Self.fields())
            }
            let f = Self.fields()
            try await store.completeRegistration(tenant: "t", user: "u", pendingID: p[5], expectedVersion: nil, fields: f)
            await #expect(throws: RealmRefusal.badPending) {   // spent
                try await store.completeRegistration(tenant: "t", user: "u", pendingID: p[5], expectedVersion: f.version, fields: Self.fields(),
                                                     replace: .init(proof: Data(), reset: true))
            }
            fixture.clock.advance(1.2)
            await #expect(throws: RealmRefusal.badPending) {   // expired
                try await store.completeRegistration(tenant: "t", user: "u", pendingID: p[4], expectedVersion: f.version, fields: Self.fields(),
                                                     replace: .init(proof: Data(), reset: true))
            }
        }
    }

    @Test("delete spends its ticket once and removes the record", arguments: StoreKind.allCases)
    func delete(kind: StoreKind) async throws {
        try await StoreFixture.with(kind) { _, store in
            let version = try await Self.register(store)
            let q = try await store.query(tenant: "t", user: "u", scope: .delete)
            await #expect(throws: RealmRefusal.versionMismatch) {
                try await store.delete(tenant: "t", user: "u", ticket: q.ticket, expectedVersion: Data(rnd(16)))
            }
            try await store.delete(tenant: "t", user: "u", ticket: q.ticket, expectedVersion: version)
            #expect(try await store.peekStatus(tenant: "t", user: "u") == .notRegistered)
            await #expect(throws: RealmRefusal.ticketReused) {
                try await store.delete(tenant: "t", user: "u", ticket: q.ticket, expectedVersion: version)
            }
        }
    }

    @Test("sweep: a record whose last challenge expired is destroyed; expired rows and marks go", arguments: StoreKind.allCases)
    func sweep(kind: StoreKind) async throws {
        try await StoreFixture.with(kind, limits: { $0.challengeLifetime = 1; $0.ticketLifetime = 1; $0.pendingLifetime = 1 }) { fixture, store in
            let version = try await Self.register(store, guessLimit: 1)
            let q = try await store.query(tenant: "t", user: "u", scope: .recover)
            let g = try await store.guess(tenant: "t", user: "u", ticket: q.ticket, version: version, blinded: try RealmStoreTests.blinded())
            #expect(g.lastGuess)
            #expect(try await store.sweep() == 0)
            fixture.clock.advance(1.2)
            #expect(try await store.sweep() == 1)
            #expect(try await store.peekStatus(tenant: "t", user: "u") == .locked(version: version))
            let rows = try await store.exportRows()
            #expect(rows.tickets.isEmpty && rows.challenges.isEmpty && rows.pending.isEmpty)
        }
    }

    @Test("anchored heads: create, advance, stale, wrong authenticator, spent ticket", arguments: StoreKind.allCases)
    func heads(kind: StoreKind) async throws {
        try await StoreFixture.with(kind) { _, store in
            let slot = Data(rnd(HeadWire.slotID)), auth = Data(rnd(32))
            func write(_ seq: UInt64, auth: Data = auth, head: Data = Data(rnd(HeadWire.sealedHead))) async throws -> (Data, UInt64) {
                let r = try await store.readHeads(tenant: "t", user: "u")
                return (r.ticket, try await store.writeHead(tenant: "t", user: "u", ticket: r.ticket, slotID: slot, seq: seq, writeAuth: auth, sealedHead: head))
            }
            let head = Data(rnd(HeadWire.sealedHead))
            let (ticket, s1) = try await write(5, head: head)
            #expect(s1 == 5)
            await #expect(throws: HeadRefusal.ticketReused) {
                _ = try await store.writeHead(tenant: "t", user: "u", ticket: ticket, slotID: slot, seq: 6, writeAuth: auth, sealedHead: head)
            }
            #expect(try await write(5, head: head).1 == 5)   // identical retry
            await #expect(throws: HeadRefusal.stale(stored: 5)) { _ = try await write(4) }
            await #expect(throws: HeadRefusal.authFailed) { _ = try await write(9, auth: Data(rnd(32))) }
            #expect(try await write(7).1 == 7)
            let read = try await store.readHeads(tenant: "t", user: "u")
            #expect(read.heads.count == 1 && read.heads[0].seq == 7 && read.heads[0].slotID == Array(slot))
        }
    }

    @Test("replay marks: kept when the operation is refused, refuse a second use, expire with the sweep", arguments: StoreKind.allCases)
    func replayMarks(kind: StoreKind) async throws {
        try await StoreFixture.with(kind) { fixture, store in
            let version = try await Self.register(store)
            let id = Data(rnd(32))
            let mark = RequestMark(id: id, expires: fixture.clock.now.addingTimeInterval(30))
            await #expect(throws: RealmRefusal.badTicket) {
                try await RequestMark.$current.withValue(mark) {
                    try await store.delete(tenant: "t", user: "u", ticket: Data(rnd(32)), expectedVersion: version)
                }
            }
            #expect(try await store.hasServed(requestID: id))
            let again = RequestMark(id: id, expires: fixture.clock.now.addingTimeInterval(30))
            await #expect(throws: ReplayedRequest.self) {
                try await RequestMark.$current.withValue(again) {
                    _ = try await store.query(tenant: "t", user: "u", scope: .recover)
                }
            }
            #expect(try await store.servedCount() == 1)
            fixture.clock.advance(31)
            try await store.sweep()
            #expect(try await store.servedCount() == 0)
            #expect(try await !store.hasServed(requestID: id))
        }
    }

    @Test("export and import: every row moves as stored, into an empty store only", arguments: StoreKind.allCases)
    func exportImport(kind: StoreKind) async throws {
        try await StoreFixture.with(kind) { fixture, store in
            let version = try await Self.register(store)
            let q = try await store.query(tenant: "t", user: "u", scope: .recover)
            _ = try await store.guess(tenant: "t", user: "u", ticket: q.ticket, version: version, blinded: try RealmStoreTests.blinded())
            let rows = try await store.exportRows().sorted()
            #expect(rows.records.count == 1 && rows.tickets.count == 1 && rows.challenges.count == 1)
            await #expect(throws: RealmMigrationError.self) { try await store.importRows(rows) }
            try await store.checkReady()
        }
    }
}

/// The `--store` / `store` syntax, and that a password never shows.
@Suite("Realm store URLs")
struct RealmStoreURLTests {
    let dir = RealmDirectory(URL(fileURLWithPath: "/var/lib/realm"))

    @Test("sqlite, sqlite:PATH and postgres:// parse; the password is starred in every description")
    func parse() throws {
        #expect(try RealmStoreLocation.parse("sqlite", directory: dir) == .sqlite(dir.databaseFile))
        #expect(try RealmStoreLocation.parse("sqlite:/tmp/x.sqlite", directory: dir) == .sqlite(URL(fileURLWithPath: "/tmp/x.sqlite")))
        let p = try PostgresStoreURL(parsing: "postgres://realm3:s3cr%40t@db.internal:6543/coffer?schema=realm_3&sslmode=require&pool=4")
        #expect(p.host == "db.internal" && p.port == 6543 && p.user == "realm3" && p.password == "s3cr@t" && p.database == "coffer")
        #expect(p.schema == "realm_3" && p.tls == .require && p.maxConnections == 4)
        #expect(!p.description.contains("s3cr") && p.description.contains(":***@"))
        #expect(!RealmStoreLocation.postgres(p).description.contains("s3cr"))
        #expect(!p.urlString().contains("s3cr"))
        let q = try PostgresStoreURL(parsing: "postgresql://u@h/d")
        #expect(q.port == 5432 && q.password == nil && q.tls == .prefer && q.schema == nil)
    }

    @Test("bad store values are refused with what is expected, never echoing a password")
    func refused() {
        for bad in ["mysql://u@h/d", "postgres://u:pw@h/", "postgres://u:pw@h/d?schema=Bad-Name", "postgres://u:pw@h/d?sslmode=maybe",
                    "postgres://u:pw@h/d?pool=0", "postgres://u:pw@h/d?user=x", "sqlite:"] {
            do {
                _ = try RealmStoreLocation.parse(bad, directory: dir)
                Issue.record("\(bad) was accepted")
            } catch let e as RealmFileError {
                #expect(!e.message.contains(":pw@"), "\(e.message)")
            } catch {
                Issue.record("\(bad): \(error)")
            }
        }
    }
}
