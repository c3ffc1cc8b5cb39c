import CofferCore
import CofferRealm
import Foundation
import Testing
@testable import CofferVault

/// Anchored backup heads (docs/VAULT.md, "Anchored backup heads"): real realms on loopback, every
/// request sealed over HTTP.
@Suite("Anchored heads", .serialized)
struct RealmHeadTests {
    static let repo = [UInt8](repeating: 0xA1, count: 16)
    static let writer = [UInt8](repeating: 0xB2, count: 16)

    static func head(seq: UInt64, repo: [UInt8] = repo, writer: [UInt8] = writer) -> AnchoredHead {
        AnchoredHead(repositoryID: repo, writerID: writer, seq: seq, snapshotID: rnd(32),
                     time: Date(timeIntervalSince1970: 1_800_000_000 + Double(seq)))
    }

    /// Head read at one realm: (ticket, listed heads).
    static func read(_ realm: RealmClient, _ user: String, scope: VaultScope = .head) async throws -> VaultAnswer {
        try await realm.send(.headRead(HeadReadRequest(token: try await realm.token(user, scope))))
    }

    static func ticket(_ realm: RealmClient, _ user: String) async throws -> Ticket {
        guard case .headRead(let a) = try await read(realm, user) else { throw TestFailure("head read refused") }
        return a.ticket
    }

    /// A head write of `head` sealed under `key` at `realm` with a fresh ticket.
    static func write(_ realm: RealmClient, _ user: String, _ head: AnchoredHead, key: BackupKey,
                      ticket: Ticket? = nil, scope: VaultScope = .head, writeAuth: [UInt8]? = nil) async throws -> (VaultAnswer, HeadWriteRequest) {
        let keys = HeadKeys(key: key)
        let (slot, sealed) = try keys.seal(head)
        let t: Ticket
        if let ticket { t = ticket } else { t = try await Self.ticket(realm, user) }
        let request = HeadWriteRequest(token: try await realm.token(user, scope), ticket: t, slotID: slot, seq: head.seq,
                                       writeAuth: writeAuth ?? keys.writeAuth(realmID: realm.realmID, slotID: slot), sealedHead: sealed)
        return (try await realm.send(.headWrite(request)), request)
    }

    @Test("stored at every realm, read back; the realm's database holds neither the slot id nor the sealed head in clear")
    func roundTrip() async throws {
        let h = try await FlowHarness.start()
        try await stopping(h) {
            let key = BackupKey()
            let client = h.client()
            let empty = try await client.readHeads(key: key, user: "ann")
            #expect(empty.heads.isEmpty && empty.answered == 5)
            let head = Self.head(seq: 3)
            let report = try await client.storeHead(head, key: key, user: "ann")
            #expect(report.acknowledged.count == 5)
            // The same head again (a retry): the deterministic seal sends identical bytes, accepted.
            #expect(try await client.storeHead(head, key: key, user: "ann").acknowledged.count == 5)
            let found = try await client.readHeads(key: key, user: "ann")
            #expect(found.heads == [head])
            #expect(found.heads(repositoryIDHex: head.repositoryIDHex) == [head])
            // Another key (another account's, or after a key rotation) opens nothing.
            let other = try await client.readHeads(key: BackupKey(), user: "ann")
            #expect(other.heads.isEmpty && other.ignored == 5)

            let (slot, sealed) = try HeadKeys(key: key).seal(head)
            for r in h.cluster.realms {
                let db = try Data(contentsOf: r.directory.databaseFile)
                let wal = (try? Data(contentsOf: URL(fileURLWithPath: r.directory.databaseFile.path + "-wal"))) ?? Data()
                for bytes in [db, wal] {
                    #expect(!bytes.contains(bytes: slot))
                    #expect(!bytes.contains(bytes: Array(sealed.prefix(32))))
                }
            }
        }
    }

    @Test("a replayed head write (same sealed bytes, or same ticket) is refused")
    func replay() async throws {
        let t = try await RealmTestCluster.start()
        try await stopping(t) {
            let realm = t.realm()
            let key = BackupKey()
            let (first, request) = try await Self.write(realm, "bo", Self.head(seq: 1), key: key)
            #expect(first == .headWrite(HeadWriteAnswer(seq: 1)))
            // The very same sealed bytes posted again (what a proxy could replay): the ticket is spent.
            let (bytes, opener) = try realm.probe.seal(.headWrite(request))
            #expect(try await realm.sendSealed(bytes, opener: opener, type: .headWrite) == .error(RealmErrorAnswer(code: .badTicket)))
            // A higher seq with the spent ticket: refused too, and nothing changed.
            var next = request
            next.seq = 2
            next.sealedHead = try HeadKeys(key: key).seal(Self.head(seq: 2)).sealed
            #expect(try await realm.send(.headWrite(next)) == .error(RealmErrorAnswer(code: .badTicket)))
            // A made-up ticket, and a Q0 ticket (another scope): refused.
            next.ticket = .random()
            #expect(try await realm.send(.headWrite(next)) == .error(RealmErrorAnswer(code: .badTicket)))
            next.ticket = try await realm.q0("bo", scope: .status).ticket
            #expect(try await realm.send(.headWrite(next)) == .error(RealmErrorAnswer(code: .badTicket)))
            guard case .headRead(let a) = try await Self.read(realm, "bo") else { throw TestFailure("read refused") }
            #expect(a.heads.map(\.seq) == [1])
        }
    }

    @Test("head requests need a head-scoped token; head tokens open no key record")
    func scope() async throws {
        let t = try await RealmTestCluster.start()
        try await stopping(t) {
            let realm = t.realm()
            let key = BackupKey()
            for s in [VaultScope.status, .recover, .register, .delete] {
                #expect(try await Self.read(realm, "cy", scope: s) == .error(RealmErrorAnswer(code: .scopeNotAllowed)))
                let (answer, _) = try await Self.write(realm, "cy", Self.head(seq: 1), key: key, scope: s)
                #expect(answer == .error(RealmErrorAnswer(code: .scopeNotAllowed)), "\(s)")
            }
            let reg = try await realm.register("cy")
            let q = try await realm.q0("cy")
            let headToken = try await realm.token("cy", .head)
            let guess = try await realm.send(.q1(Q1Request(token: headToken, ticket: q.ticket, version: reg.version,
                                                           blindedElement: try VaultOPRF.blind(rnd(8)).blindedElementBytes)))
            #expect(guess == .error(RealmErrorAnswer(code: .scopeNotAllowed)))
            #expect(try await realm.attemptsLeft("cy") == 10)
            guard case .headRead(let a) = try await Self.read(realm, "cy") else { throw TestFailure("read refused") }
            #expect(a.heads.isEmpty)
        }
    }

    @Test("a lower seq is refused, the same seq with other bytes too; without K a slot cannot be overwritten; slots are bounded")
    func staleAndAuth() async throws {
        let t = try await RealmTestCluster.start()
        try await stopping(t) {
            let realm = t.realm()
            let key = BackupKey()
            #expect(try await Self.write(realm, "di", Self.head(seq: 5), key: key).0 == .headWrite(HeadWriteAnswer(seq: 5)))
            #expect(try await Self.write(realm, "di", Self.head(seq: 4), key: key).0 == .error(RealmErrorAnswer(code: .staleHead)))
            #expect(try await Self.write(realm, "di", Self.head(seq: 5), key: key).0 == .error(RealmErrorAnswer(code: .staleHead)))
            // A token holder without K (the tenant, say) who read the slot id: a higher seq with a wrong authenticator.
            let (answer, _) = try await Self.write(realm, "di", Self.head(seq: 99), key: key, writeAuth: rnd(32))
            #expect(answer == .error(RealmErrorAnswer(code: .headAuthFailed)))
            #expect(try await Self.write(realm, "di", Self.head(seq: 6), key: key).0 == .headWrite(HeadWriteAnswer(seq: 6)))
            guard case .headRead(let a) = try await Self.read(realm, "di") else { throw TestFailure("read refused") }
            #expect(a.heads.map(\.seq) == [6])
            #expect(HeadKeys(key: key).open(slotID: a.heads[0].slotID, sealed: a.heads[0].sealedHead)?.seq == 6)

            // Slots per user are bounded: the 17th (repository, writer) pair is refused.
            for i in 1..<HeadWire.maxSlots {
                let (ok, _) = try await Self.write(realm, "di", Self.head(seq: 1, writer: [UInt8](repeating: UInt8(i), count: 16)), key: key)
                #expect(ok == .headWrite(HeadWriteAnswer(seq: 1)))
            }
            let (full, _) = try await Self.write(realm, "di", Self.head(seq: 1, writer: [UInt8](repeating: 0xEE, count: 16)), key: key)
            #expect(full == .error(RealmErrorAnswer(code: .tooManyHeads)))
            guard case .headRead(let b) = try await Self.read(realm, "di") else { throw TestFailure("read refused") }
            #expect(b.heads.count == HeadWire.maxSlots)
        }
    }

    @Test("a lying realm's forged head (bad MAC) is ignored; its old head loses to the newest at the others; t answers suffice")
    func lyingRealm() async throws {
        let h = try await FlowHarness.start()
        try await stopping(h) {
            let key = BackupKey()
            // A stopped realm refuses the connection at once: a generous timeout costs nothing.
            func quick() -> VaultClient { h.client(transport: HTTPRealmTransport(timeout: .seconds(30))) }
            let old = Self.head(seq: 1), new = Self.head(seq: 2)
            try await quick().storeHead(old, key: key, user: "ed")
            // Realm 1 misses the newest write (down), then comes back holding only the old head.
            await h.cluster.realms[0].stop()
            let partial = try await quick().storeHead(new, key: key, user: "ed")
            #expect(partial.acknowledged.count == 4)
            try await restart(h.cluster.realms[0])

            // Realm 1 also forges: a higher seq in the same slot under a key it does not have.
            let liar = h.config.realms[0].id
            let forging = TamperingTransport(inner: HTTPRealmTransport(timeout: .seconds(30)), targets: [liar]) { answer in
                guard case .headRead(var a) = answer else { return answer }
                a.heads = a.heads.map { var f = $0; f.seq = 50; f.sealedHead[20] ^= 1; return f }
                    + [StoredHead(slotID: rnd(16), seq: 60, sealedHead: rnd(HeadWire.sealedHead))]
                return .headRead(a)
            }
            let client = VaultClient(configuration: h.config, tokens: h.tenant, transport: forging)
            let found = try await client.readHeads(key: key, user: "ed")
            #expect(found.heads == [new])
            #expect(found.ignored == 2)

            // Only t = 3 realms answer, the stale one among them: the newest still wins.
            await h.cluster.realms[1].stop()
            await h.cluster.realms[2].stop()
            let three = try await quick().readHeads(key: key, user: "ed")
            #expect(three.heads == [new] && three.answered == 3)
            // Fewer than t answers: no verdict, an error (never "no head").
            await h.cluster.realms[3].stop()
            await #expect(throws: VaultError.self) { try await quick().readHeads(key: key, user: "ed") }
            // A store needs n - t + 1 = 3 acknowledgements: refused before writing anything with 1 realm.
            do {
                try await quick().storeHead(Self.head(seq: 3), key: key, user: "ed")
                Issue.record("a store with one realm took effect")
            } catch let error as VaultError {
                guard error.code == .realmsUnavailable else { Issue.record("\(error)"); return }
            }
        }
    }

    @Test("head seals: slot bound into the AAD, another slot or a flipped byte does not open")
    func sealing() throws {
        let key = BackupKey()
        let keys = HeadKeys(key: key)
        let head = Self.head(seq: 7)
        let (slot, sealed) = try keys.seal(head)
        #expect(sealed.count == HeadWire.sealedHead && slot.count == HeadWire.slotID)
        #expect(keys.open(slotID: slot, sealed: sealed) == head)
        #expect(try keys.seal(head).sealed == sealed)
        let otherSlot = keys.slotID(repositoryID: Self.repo, writerID: rnd(16))
        #expect(keys.open(slotID: otherSlot, sealed: sealed) == nil)
        for i in [0, 12, 60, sealed.count - 1] {
            var bad = sealed
            bad[i] ^= 0x40
            #expect(keys.open(slotID: slot, sealed: bad) == nil)
        }
        #expect(HeadKeys(key: BackupKey()).open(slotID: slot, sealed: sealed) == nil)
    }

    @Test("published vectors (scripts/head_vectors.py, computed with Python's hashlib/hmac/cryptography)")
    func vectors() throws {
        let v = try loadVector("vault-heads")
        func h(_ k: String) -> [UInt8] { hex(v[k] as! String) }
        let key = try BackupKey(bytes: h("K"))
        let head = AnchoredHead(repositoryID: h("repositoryID"), writerID: h("writerID"), seq: UInt64(v["seq"] as! Int),
                                snapshotID: h("snapshotID"),
                                time: Date(timeIntervalSince1970: Double(v["timeMilliseconds"] as! Int) / 1000))
        #expect(head.plaintext == h("plaintext"))
        let keys = HeadKeys(key: key)
        #expect(keys.seal.withUnsafeBytes { Array($0) } == h("K_seal"))
        #expect(keys.slot.withUnsafeBytes { Array($0) } == h("K_slot"))
        #expect(keys.auth.withUnsafeBytes { Array($0) } == h("K_auth"))
        #expect(keys.nonce.withUnsafeBytes { Array($0) } == h("K_nonce"))
        let (slot, sealed) = try keys.seal(head)
        #expect(slot == h("slotID"))
        #expect(sealed == h("sealedHead"))
        #expect(Array(sealed.prefix(12)) == h("nonce"))
        #expect(keys.writeAuth(realmID: try RealmID(bytes: h("realmID")), slotID: slot) == h("writeAuth"))
        #expect(keys.open(slotID: slot, sealed: h("sealedHead")) == head)
    }

    @Test("wire: head messages round-trip at their padded sizes; 16 listed heads fit, 17 do not; decoding is strict")
    func wire() throws {
        let write = HeadWriteRequest(token: "t.o.k", ticket: .random(), slotID: rnd(16), seq: 0x0102030405060708,
                                     writeAuth: rnd(32), sealedHead: rnd(HeadWire.sealedHead))
        let bytes = try VaultRequest.headWrite(write).encode()
        #expect(bytes.count == 4096)
        #expect(try VaultRequest.decode(bytes, type: .headWrite) == .headWrite(write))
        #expect(throws: WireError.self) { try VaultRequest.decode(bytes, type: .headRead) }
        var short = write
        short.sealedHead.removeLast()
        #expect(throws: WireError.self) { try VaultRequest.headWrite(short).encode() }

        let full = HeadReadAnswer(ticket: .random(), heads: (0..<HeadWire.maxSlots).map { _ in
            StoredHead(slotID: rnd(16), seq: UInt64.random(in: 0...UInt64.max), sealedHead: rnd(HeadWire.sealedHead))
        })
        let answer = try VaultAnswer.headRead(full).encode(for: .headRead)
        #expect(answer.count == HeadWire.readAnswerPaddedSize)
        #expect(try VaultAnswer.decode(answer, for: .headRead) == .headRead(full))
        var over = full
        over.heads.append(full.heads[0])
        #expect(throws: WireError.self) { try VaultAnswer.headRead(over).encode(for: .headRead) }
        // An error answer to a head read has the head read's size too (sizes say nothing).
        #expect(try VaultAnswer.error(RealmErrorAnswer(code: .staleHead)).encode(for: .headRead).count == HeadWire.readAnswerPaddedSize)
        #expect(try VaultAnswer.headWrite(HeadWriteAnswer(seq: 9)).encode(for: .headWrite).count == 512)
        var tampered = answer
        tampered[1 + 32] = UInt8(HeadWire.maxSlots + 1)
        #expect(throws: WireError.self) { try VaultAnswer.decode(tampered, for: .headRead) }
    }
}
