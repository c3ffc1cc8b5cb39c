import CofferRealm
import CofferVault
import Foundation
import Testing

@Suite("Realm robustness, storage and operation", .serialized)
struct RealmRobustnessTests {
    @Test("undecryptable bodies get a bare 400; decryptable malformed ones a sealed error of the usual size; the realm keeps serving")
    func malformedBodies() async throws {
        let t = try await RealmTestCluster.start()
        try await stopping(t) {
            let realm = t.realm()
            _ = try await realm.register("kim")

            let (good, goodOpener) = try realm.probe.seal(.q0(Q0Request(token: try await realm.token("kim", .recover))))
            let cases: [(String, String, [UInt8])] = [
                ("empty", "/v1/q0", []),
                ("random bytes", "/v1/q0", rnd(2000)),
                ("truncated", "/v1/q0", Array(good.prefix(good.count - 7))),
                ("flipped byte", "/v1/q0", { var b = good; b[b.count - 3] ^= 1; return b }()),
                ("unknown key id", "/v1/q0", [0, 0, 0, 9] + Array(good.dropFirst(4))),
                ("another path (aad)", "/v1/q1", good),
                ("oversize", "/v1/q0", rnd(40_000)),
            ]
            for (name, path, bytes) in cases {
                let (status, body) = try await realm.post(path, bytes)
                #expect(status == 400 || status == 413, "\(name): HTTP \(status)")
                #expect(body.isEmpty, "\(name): a bare error must carry no detail")
            }

            // Decrypts, but the body is not a valid request: a sealed `malformed`, padded like any answer.
            let goodAnswer = try await realm.post("/v1/q0", good)
            let bodies: [([UInt8], RealmErrorCode)] = [
                ([], .malformed), (rnd(4096), .malformed), ([0x04] + rnd(100), .malformed), ([UInt8](repeating: 0, count: 4097), .malformed),
                ([0x01, 0x00, 0x03, 0x41, 0x41] + [UInt8](repeating: 7, count: 4091), .malformed),   // non-zero padding
                // Well-formed Q0 with an empty token: decodes, then the token is refused.
                ([0x01] + [UInt8](repeating: 0, count: 4095), .badToken),
            ]
            for (body, code) in bodies {
                let (bytes, opener) = try realm.probe.seal(rawBody: body, type: .q0)
                let (status, answer) = try await realm.post("/v1/q0", bytes)
                #expect(status == 200)
                #expect(answer.count == goodAnswer.1.count, "error answers must be as long as success answers")
                #expect(try realm.probe.open(answer, opener: opener, type: .q0) == .error(RealmErrorAnswer(code: code)))
            }
            // Still serving, and the good request's own answer opens.
            guard case .q0 = try realm.probe.open(goodAnswer.1, opener: goodOpener, type: .q0) else { Issue.record("good Q0 failed"); return }
            #expect(try await realm.getAdmin("/health").0 == 200)
            #expect(try await realm.q0("kim").state == .active)
        }
    }

    @Test("the realm's database alone holds no user id, tenant, share, tag, W or challenge")
    func databaseHoldsNoSecrets() async throws {
        let t = try await RealmTestCluster.start()
        try await stopping(t) {
            let realm = t.realm()
            let user = "lena.very-identifiable-user@example.com"
            let reg = try await realm.register(user)
            guard case .q1(let a) = try await realm.guess(user, version: reg.version) else { Issue.record("no Q1"); return }
            let pending = try await realm.send(.r1(R1Request(token: try await realm.token(user, .register), blindedElement: try VaultOPRF.blind(rnd(8)).blindedElementBytes)))
            guard case .r1(let r1) = pending else { Issue.record("no R1"); return }

            var all = Data()
            for name in try FileManager.default.contentsOfDirectory(atPath: realm.directory.url.path) where name.hasPrefix("realm.sqlite") {
                all += try Data(contentsOf: realm.directory.url.appendingPathComponent(name))
            }
            #expect(all.count > 10_000)
            for (what, needle) in [("user id", Array(user.utf8)), ("user name part", Array("very-identifiable".utf8)),
                                   ("tenant", Array("coffer-dev".utf8)), ("masked share", reg.maskedShare), ("tag", reg.tag),
                                   ("W", reg.wrapped), ("version", reg.version.bytes), ("challenge", a.challenge.bytes),
                                   ("pending id", r1.pendingID.bytes), ("evaluated element", a.evaluatedElement)] {
                #expect(!all.contains(bytes: needle), "the database contains the \(what)")
            }
            // Positive control: the search does find what is stored in the clear (the record key).
            let keys = try RealmKeys.load(from: realm.directory.keyFile)
            #expect(all.contains(bytes: Array(RealmTestCluster.recordKey(keys: keys, tenant: "coffer-dev", user: user))))
        }
    }

    @Test("a record's seal is bound to its key and generation")
    func sealBinding() async throws {
        let t = try await RealmTestCluster.start()
        try await stopping(t) {
            let realm = t.realm()
            _ = try await realm.register("max")
            let keys = try RealmKeys.load(from: realm.directory.keyFile)
            let row = try #require(try realm.storedRow("max"))
            let rk = RealmTestCluster.recordKey(keys: keys, tenant: "coffer-dev", user: "max")
            #expect(try RealmTestCluster.openRecord(keys: keys, recordKey: rk, gen: row.gen, sealed: row.sealed).count > 300)
            #expect(throws: (any Error).self) { try RealmTestCluster.openRecord(keys: keys, recordKey: rk, gen: row.gen + 1, sealed: row.sealed) }
            let other = RealmTestCluster.recordKey(keys: keys, tenant: "coffer-dev", user: "other")
            #expect(throws: (any Error).self) { try RealmTestCluster.openRecord(keys: keys, recordKey: other, gen: row.gen, sealed: row.sealed) }
        }
    }

    @Test("the request hook sees every decrypted body, and only those")
    func requestHook() async throws {
        let t = try await RealmTestCluster.start()
        try await stopping(t) {
            let realm = t.realm()
            let before = t.requests.all.count
            let reg = try await realm.register("nora")   // Q0, R1, R2
            _ = try await realm.wrongRound("nora", version: reg.version)   // Q0, Q1, Q2
            _ = try await realm.post("/v1/q0", rnd(3000))   // undecryptable: not seen
            let seen = Array(t.requests.all.dropFirst(before))
            #expect(seen.map(\.0) == [.q0, .r1, .r2, .q0, .q1, .q2])
            for (type, body) in seen {
                let decoded = try VaultRequest.decode(body, type: type)
                #expect(decoded.type == type)
            }
            // What R2 carried is exactly what the client built.
            guard case .r2(let r2) = try VaultRequest.decode(seen[2].1, type: .r2) else { Issue.record("not R2"); return }
            #expect(r2 == reg.r2)
        }
    }

    @Test("metrics count guesses, unlocks, lockouts, registrations and deletions in Prometheus text")
    func metrics() async throws {
        let t = try await RealmTestCluster.start()
        try await stopping(t) {
            let realm = t.realm()
            let reg = try await realm.register("olga", guessLimit: 2)
            _ = try await realm.wrongRound("olga", version: reg.version)
            _ = try await realm.wrongRound("olga", version: reg.version)   // destroys
            let reg2 = try await realm.register("pia")
            guard case .q1(let a) = try await realm.guess("pia", version: reg2.version) else { Issue.record("no Q1"); return }
            _ = try await realm.unlock("pia", version: reg2.version, challenge: a.challenge, proof: realm.proof(tag: reg2.tag, version: reg2.version, challenge: a.challenge))
            let dq = try await realm.q0("pia", scope: .delete)
            _ = try await realm.send(.delete(DeleteRequest(token: try await realm.token("pia", .delete), ticket: dq.ticket, expectedVersion: reg2.version)))
            let (status, text) = try await realm.getAdmin("/metrics")
            #expect(status == 200)
            func value(_ name: String) -> Double? {
                text.split(separator: "\n").first { $0.hasPrefix(name + " ") }.flatMap { Double($0.split(separator: " ").last!) }
            }
            #expect(value("coffer_realm_guesses_total") == 3)
            #expect(value("coffer_realm_unlocks_total") == 1)
            #expect(value("coffer_realm_lockouts_total") == 1)
            #expect(value("coffer_realm_registrations_total") == 2)
            #expect(value("coffer_realm_deletions_total") == 1)
            #expect(text.contains("coffer_realm_request_duration_seconds_bucket{endpoint=\"Q1\""))
        }
    }

    @Test("key file: 0600, refused when readable by others, never overwritten; descriptor matches it")
    func keyFile() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-realm-key-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let realmDir = RealmDirectory(dir)
        let (keys, _) = try realmDir.initialize(x: 3, url: "http://127.0.0.1:9")
        let mode = try FileManager.default.attributesOfItem(atPath: realmDir.keyFile.path)[.posixPermissions] as? Int
        #expect(mode == 0o600)
        #expect(throws: RealmFileError.self) { try realmDir.initialize(x: 3) }
        let loaded = try RealmKeys.load(from: realmDir.keyFile)
        #expect(loaded.realmID == keys.realmID)
        #expect(loaded.hpkeKeys.map { $0.publicKey.rawRepresentation } == keys.hpkeKeys.map { $0.publicKey.rawRepresentation })
        #expect(!"\(loaded)".contains(keys.storageKey.withUnsafeBytes { Data($0) }.base64EncodedString()))
        let d = keys.descriptor(url: "http://127.0.0.1:9")
        #expect(d.id == keys.realmIDHex && d.keys.count == 1)
        #expect(try d.keys[0].realmPublicKey().rawRepresentation == Array(keys.hpkeKeys[0].publicKey.rawRepresentation))

        // Rotation: two live keys, the new one first in the descriptor; retiring leaves one.
        var rotated = loaded
        let newID = try rotated.rotate()
        #expect(newID == 2 && rotated.descriptor(url: "x").keys.map(\.id) == [2, 1])
        try rotated.retire(keyID: 1)
        #expect(rotated.hpkeKeys.map(\.id) == [2])
        #expect(throws: RealmFileError.self) { try rotated.retire(keyID: 2) }

        chmod(realmDir.keyFile.path, 0o644)
        #expect(throws: RealmFileError.self) { _ = try RealmKeys.load(from: realmDir.keyFile) }
    }

    @Test("a request sealed to either live key is served during rotation")
    func rotationServesBothKeys() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-realm-rot-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let realmDir = RealmDirectory(dir)
        var (keys, config) = try realmDir.initialize(x: 1)
        try keys.rotate()
        try keys.save(to: realmDir.keyFile)
        let service = try await RealmService(keys: keys, config: config, databaseURL: realmDir.databaseFile)
        for k in keys.hpkeKeys {
            let probe = RealmProbe(realmID: service.realmID, key: try RealmPublicKey(id: k.id, rawRepresentation: Array(k.publicKey.rawRepresentation)))
            // No tenant is configured: the answer is a sealed badToken, which proves the body opened.
            #expect(try await probe.exchange(.q0(Q0Request(token: "x.y.z")), with: service) == .error(RealmErrorAnswer(code: .badToken)))
        }
        config.x = 1
    }

    @Test("cluster: five realms, vault.json the client accepts, tenant key 0600, realms kept across restarts")
    func cluster() async throws {
        let t = try await RealmTestCluster.start(count: 5)
        let vault = try VaultConfiguration.load(from: t.cluster.layout.vaultConfigURL)
        let validated = try vault.validated()
        #expect(validated.n == 5 && validated.threshold == 3)
        #expect(vault.realms.map(\.x) == [1, 2, 3, 4, 5])
        #expect(vault.tenant == "coffer-dev" && vault.developmentTenantKey == "tenant-dev-key.pem")
        let mode = try FileManager.default.attributesOfItem(atPath: t.cluster.layout.tenantKeyURL.path)[.posixPermissions] as? Int
        #expect(mode == 0o600)
        for (i, r) in vault.realms.enumerated() {
            let (status, json) = try await t.realm(i + 1).get("/v1/descriptor")
            #expect(status == 200)
            let d = try JSONDecoder().decode(RealmDescriptor.self, from: Data(json.utf8))
            #expect(d.id == r.id && d.keys == r.keys)
        }
        let ids = vault.realms.map(\.id)
        await t.cluster.stop()
        let again = try await RealmCluster.start(layout: t.cluster.layout)
        #expect(again.vaultConfiguration.realms.map(\.id) == ids)
        #expect(again.actions.isEmpty)
        await again.stop()
        try? FileManager.default.removeItem(at: t.root)
    }
}
