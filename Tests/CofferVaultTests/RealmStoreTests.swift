import CofferRealm
import CofferVault
import Foundation
import Logging
import Testing

/// Expiry rules of the store, driven directly with short lifetimes (the HTTP path runs the same code).
@Suite("Realm store expiry and limits")
struct RealmStoreTests {
    /// A clock the test moves by hand, so expiry is tested without sleeping (and without flaking under load).
    final class TestClock: Sendable {
        private let t = Mutex2(Date())
        var now: Date { t.withLock { $0 } }
        func advance(_ seconds: TimeInterval) { t.withLock { $0 += seconds } }
    }

    static func store(_ adjust: (inout RealmStore.Limits) -> Void) throws -> (RealmStore, URL, TestClock) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-realm-store-\(UUID().uuidString)")
        let (keys, config) = try RealmDirectory(dir).initialize(x: 1)
        var limits = RealmStore.Limits(guessLimit: 10)
        adjust(&limits)
        let clock = TestClock()
        return (try RealmStore(url: RealmDirectory(dir).databaseFile, keys: keys, config: config, limits: limits, now: { clock.now }), dir, clock)
    }

    static func register(_ store: RealmStore, user: String = "u", guessLimit: Int = 10) async throws -> Data {
        let r1 = try await store.beginRegistration(tenant: "t", user: user, blinded: Data(try VaultOPRF.blind([1]).blindedElementBytes))
        let version = Data(rnd(16))
        try await store.completeRegistration(tenant: "t", user: user, pendingID: r1.pendingID, expectedVersion: nil,
                                             fields: RegistrationFields(version: version, c: Data(rnd(32)), commitment: Data(rnd(32)), vk: Data(rnd(32)),
                                                                        sig: Data(rnd(64)), tag: Data(rnd(32)), wrapped: Data(rnd(60)),
                                                                        policy: Data(VaultPolicy.default.bytes), guessLimit: guessLimit))
        return version
    }

    static func blinded() throws -> Data { Data(try VaultOPRF.blind(rnd(8)).blindedElementBytes) }

    @Test("the background sweep destroys a record whose last challenge expired, and wipes expired rows")
    func sweepDestroys() async throws {
        let (store, dir, clock) = try Self.store { $0.challengeLifetime = 1; $0.ticketLifetime = 1; $0.pendingLifetime = 1 }
        defer { try? FileManager.default.removeItem(at: dir) }
        let version = try await Self.register(store, guessLimit: 1)
        let q = try await store.query(tenant: "t", user: "u", scope: .recover)
        _ = try await store.guess(tenant: "t", user: "u", ticket: q.ticket, version: version, blinded: try Self.blinded())
        _ = try await store.beginRegistration(tenant: "t", user: "u", blinded: try Self.blinded())
        #expect(try await store.sweep() == 0)   // the challenge is still live
        clock.advance(1.2)
        #expect(try await store.sweep() == 1)
        #expect(try await store.peekStatus(tenant: "t", user: "u") == .locked(version: version))
        #expect(try await store.sweep() == 0)
    }

    @Test("an expired ticket is refused and spends nothing")
    func ticketExpiry() async throws {
        let (store, dir, clock) = try Self.store { $0.ticketLifetime = 1 }
        defer { try? FileManager.default.removeItem(at: dir) }
        let version = try await Self.register(store)
        let q = try await store.query(tenant: "t", user: "u", scope: .recover)
        clock.advance(1.2)
        await #expect(throws: RealmRefusal.badTicket) {
            _ = try await store.guess(tenant: "t", user: "u", ticket: q.ticket, version: version, blinded: try Self.blinded())
        }
        guard case .active(_, _, _, _, let left) = try await store.peekStatus(tenant: "t", user: "u") else { Issue.record("not active"); return }
        #expect(left == 10)
    }

    @Test("pending registrations: at most four per user (the oldest dropped), and they expire")
    func pendingLimits() async throws {
        let (store, dir, clock) = try Self.store { $0.pendingLifetime = 1 }
        defer { try? FileManager.default.removeItem(at: dir) }
        var pendings: [PendingAnswer] = []
        for _ in 0..<6 {
            pendings.append(try await store.beginRegistration(tenant: "t", user: "u", blinded: try Self.blinded()))
            clock.advance(0.01)
        }
        let fields = RegistrationFields(version: Data(rnd(16)), c: Data(rnd(32)), commitment: Data(rnd(32)), vk: Data(rnd(32)), sig: Data(rnd(64)),
                                        tag: Data(rnd(32)), wrapped: Data(rnd(60)), policy: Data(VaultPolicy.default.bytes), guessLimit: 10)
        await #expect(throws: RealmRefusal.badPending) {
            try await store.completeRegistration(tenant: "t", user: "u", pendingID: pendings[0].pendingID, expectedVersion: nil, fields: fields)
        }
        // Another user's pending id is not this user's.
        await #expect(throws: RealmRefusal.badPending) {
            try await store.completeRegistration(tenant: "t", user: "v", pendingID: pendings[5].pendingID, expectedVersion: nil, fields: fields)
        }
        try await store.completeRegistration(tenant: "t", user: "u", pendingID: pendings[5].pendingID, expectedVersion: nil, fields: fields)
        clock.advance(1.2)
        var f2 = fields
        f2.version = Data(rnd(16))
        await #expect(throws: RealmRefusal.badPending) {
            try await store.completeRegistration(tenant: "t", user: "u", pendingID: pendings[4].pendingID, expectedVersion: fields.version, fields: f2)
        }
    }

    @Test("a destroyed record can be registered again by whoever holds K (expectedVersion none or the tombstone's)")
    func reRegisterAfterLock() async throws {
        let (store, dir, _) = try Self.store { _ in }
        defer { try? FileManager.default.removeItem(at: dir) }
        let version = try await Self.register(store, guessLimit: 1)
        let q = try await store.query(tenant: "t", user: "u", scope: .recover)
        let g = try await store.guess(tenant: "t", user: "u", ticket: q.ticket, version: version, blinded: try Self.blinded())
        #expect(try await store.unlock(tenant: "t", user: "u", version: version, challenge: g.answer.challenge, proof: Data(rnd(32))) == .destroyed)
        #expect(try await store.peekStatus(tenant: "t", user: "u") == .locked(version: version))
        let r1 = try await store.beginRegistration(tenant: "t", user: "u", blinded: try Self.blinded())
        let fields = RegistrationFields(version: Data(rnd(16)), c: Data(rnd(32)), commitment: Data(rnd(32)), vk: Data(rnd(32)), sig: Data(rnd(64)),
                                        tag: Data(rnd(32)), wrapped: Data(rnd(60)), policy: Data(VaultPolicy.default.bytes), guessLimit: 10)
        try await store.completeRegistration(tenant: "t", user: "u", pendingID: r1.pendingID, expectedVersion: version, fields: fields)
        guard case .active(let v, _, _, _, let left) = try await store.peekStatus(tenant: "t", user: "u") else { Issue.record("not active"); return }
        #expect(v == fields.version && left == 10)
    }
}

/// Logs: audit events with a pseudonymous user reference, and never a secret.
@Suite("Realm logs", .serialized)
struct RealmLogTests {
    final class Capture: @unchecked Sendable {
        let lines = Mutex2<[String]>([])
    }

    struct CaptureHandler: LogHandler {
        let capture: Capture
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(level: Logger.Level, message: Logger.Message, metadata extra: Logger.Metadata?, source: String, file: String, function: String, line: UInt) {
            let all = metadata.merging(extra ?? [:]) { $1 }
            capture.lines.withLock { $0.append("\(level) \(message) \(all.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))") }
        }
    }

    @Test("audit events carry a hashed user reference; no token, ticket, element, share, tag, challenge, proof or W is ever logged")
    func logsHoldNoSecrets() async throws {
        let capture = Capture()
        let logger = Logger(label: "test") { _ in CaptureHandler(capture: capture) }
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-realm-log-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let layout = RealmClusterLayout(directory: root, count: 1)
        let cluster = try await RealmCluster.start(layout: layout, logger: logger)
        let tenant = try await DevelopmentTenant.forConfiguration(cluster.vaultConfiguration, at: layout.vaultConfigURL)
        let r = cluster.vaultConfiguration.realms[0]
        let realm = RealmClient(url: r.url, probe: try RealmProbe(descriptor: r.descriptor), tenant: tenant, directory: cluster.realms[0].directory)
        let user = "ursula@example.com"
        let reg = try await realm.register(user, guessLimit: 3)
        var secrets: [[UInt8]] = [reg.tag, reg.wrapped, reg.maskedShare, reg.r2.signature, reg.r2.commitment, reg.r2.pendingID.bytes]
        let q = try await realm.q0(user)
        secrets.append(q.ticket.bytes)
        let token = try await realm.token(user, .recover)
        let blinded = try VaultOPRF.blind(rnd(8)).blindedElementBytes
        secrets.append(blinded)
        guard case .q1(let a) = try await realm.send(.q1(Q1Request(token: token, ticket: q.ticket, version: reg.version, blindedElement: blinded))) else {
            Issue.record("no Q1"); return
        }
        secrets += [a.challenge.bytes, a.evaluatedElement, a.proof]
        let proof = realm.proof(tag: reg.tag, version: reg.version, challenge: a.challenge)
        secrets.append(proof)
        _ = try await realm.unlock(user, version: reg.version, challenge: a.challenge, proof: proof)
        _ = try await realm.wrongRound(user, version: reg.version)
        _ = try await realm.send(.q1(Q1Request(token: "bad.token.here", ticket: q.ticket, version: reg.version, blindedElement: blinded)))
        let dq = try await realm.q0(user, scope: .delete)
        _ = try await realm.send(.delete(DeleteRequest(token: try await realm.token(user, .delete), ticket: dq.ticket, expectedVersion: reg.version)))
        await cluster.stop()

        let text = capture.lines.withLock { $0.joined(separator: "\n") }
        for event in ["guess", "unlock", "register", "delete"] {
            #expect(text.contains("event=\(event)"), "no \(event) audit event")
        }
        #expect(!text.contains(user) && !text.contains("ursula"), "the user id was logged")
        #expect(!text.contains(token) && !text.contains(String(token.prefix(20))), "a token was logged")
        for s in secrets {
            let hex = s.map { String(format: "%02x", $0) }.joined()
            let b64 = Data(s).base64EncodedString()
            #expect(!text.contains(hex) && !text.contains(b64) && !text.contains(String(hex.prefix(16))), "a secret value was logged")
        }
        // The user reference is stable across events.
        let refs = Set(text.split(separator: "\n").filter { $0.contains("event=") }.compactMap { line in
            line.split(separator: " ").first { $0.hasPrefix("user=") }
        })
        #expect(refs.count == 1)
    }

    @Test("head slots: when all 16 are taken only one idle past its lifetime makes room; a live slot is never evicted")
    func headSlotEviction() async throws {
        let (store, dir, clock) = try RealmStoreTests.store { $0.headSlotIdleLifetime = 100; $0.ticketLifetime = 1000 }
        defer { try? FileManager.default.removeItem(at: dir) }
        func write(_ slot: UInt8, seq: UInt64) async throws -> UInt64 {
            let ticket = try await store.readHeads(tenant: "t", user: "u").ticket
            return try await store.writeHead(tenant: "t", user: "u", ticket: ticket, slotID: Data(repeating: slot, count: 16), seq: seq,
                                             writeAuth: Data(repeating: slot, count: 32), sealedHead: Data(rnd(HeadWire.sealedHead)))
        }
        for i in 0..<UInt8(HeadWire.maxSlots) { #expect(try await write(i, seq: 1) == 1) }
        await #expect(throws: HeadRefusal.tooManySlots) { try await write(0xF0, seq: 1) }
        clock.advance(60)
        for i in 1..<UInt8(HeadWire.maxSlots) { _ = try await write(i, seq: 2) }   // all but slot 0 stay live
        clock.advance(60)
        #expect(try await write(0xF0, seq: 1) == 1)                               // slot 0 (idle 120 s) made room
        await #expect(throws: HeadRefusal.tooManySlots) { try await write(0xF1, seq: 1) }
        let slots = Set(try await store.readHeads(tenant: "t", user: "u").heads.map { $0.slotID[0] })
        #expect(slots.count == HeadWire.maxSlots && !slots.contains(0) && slots.contains(0xF0))
    }
}
