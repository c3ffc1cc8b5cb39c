import CofferCore
import CofferRealm
import Foundation
import Testing
@testable import CofferVault

/// Issue 11, problem 8 at the client and the CLI: a change of password proves the current one to
/// every realm; enabling over an existing registration is refused unless it is an explicit, counted reset.
@Suite("Vault: replacing an active registration", .serialized)
struct VaultReplaceTests {
    static func metric(_ h: FlowHarness, _ i: Int, _ name: String) -> Double? {
        h.cluster.realms[i].service?.metrics.render().split(separator: "\n").first { $0.hasPrefix(name + " ") }
            .flatMap { Double($0.split(separator: " ").last!) }
    }

    static func resets(_ h: FlowHarness, _ user: String) async throws -> [Int] {
        var out: [Int] = []
        for r in h.cluster.realms { out.append(try try await #require(r.service).store.resetCount(tenant: h.config.tenant, user: user)) }
        return out
    }

    @Test("change-password with the right current password: every realm takes it with proof (no reset), the old password stops working")
    func changeWithProof() async throws {
        let h = try await FlowHarness.start()
        try await stopping(h) {
            let client = h.client()
            let key = BackupKey()
            let v1 = try await client.register(key: key, password: "first pw", user: "ada").version
            let change = try await client.changePassword(currentPassword: "first pw", newPassword: "second pw", user: "ada")
            #expect(change.complete && change.version != v1)
            #expect(await client.status(user: "ada").activeVersion == change.version)
            await #expect(throws: VaultError.wrongPassword(attemptsLeft: 9)) {
                _ = try await client.recover(password: "first pw", user: "ada", rotate: false)
            }
            #expect(try await client.recover(password: "second pw", user: "ada").key.constantTimeEquals(key))
            #expect(try await Self.resets(h, "ada") == [0, 0, 0, 0, 0])
            for i in 0..<5 {
                #expect((Self.metric(h, i, "coffer_realm_replace_refusals_total") ?? 0) == 0)
                #expect((Self.metric(h, i, "coffer_realm_resets_total") ?? 0) == 0)
            }
        }
    }

    @Test("change-password with a wrong current password fails (one guess) and changes nothing")
    func changeWithWrongPassword() async throws {
        let h = try await FlowHarness.start()
        try await stopping(h) {
            let client = h.client()
            let key = BackupKey()
            let v1 = try await client.register(key: key, password: "first pw", user: "ben").version
            await #expect(throws: VaultError.wrongPassword(attemptsLeft: 9)) {
                _ = try await client.changePassword(currentPassword: "not it", newPassword: "second pw", user: "ben")
            }
            #expect(await client.status(user: "ben").activeVersion == v1)
            #expect(h.seen.withLock { $0.filter { $0.0 == .r1 || $0.0 == .r2 }.count } == 5 + 5)  // only the enable's
            await #expect(throws: VaultError.wrongPassword(attemptsLeft: 8)) {
                _ = try await client.recover(password: "second pw", user: "ben", rotate: false)
            }
            #expect(try await client.recover(password: "first pw", user: "ben").key.constantTimeEquals(key))
        }
    }

    @Test("a plain registration over an active one is refused before anything is written; a reset replaces it and every realm counts it")
    func enableRefusedUnlessReset() async throws {
        let h = try await FlowHarness.start()
        try await stopping(h) {
            let client = h.client()
            let v1 = try await client.register(key: BackupKey(), password: "first pw", user: "cy").version
            let writesBefore = h.seen.withLock { $0.filter { $0.0 == .r1 || $0.0 == .r2 }.count }
            do {
                _ = try await client.register(key: BackupKey(), password: "other pw", user: "cy")
                Issue.record("a second enable replaced an active registration")
            } catch let e as VaultError {
                let realms = e.realms
                guard e.code == .registrationExists else { Issue.record("wrong error \(e)"); return }
                #expect(realms.count == 5)
                #expect(e.description.contains("already has a key in the vault") && !e.description.contains("other pw"))
            }
            #expect(h.seen.withLock { $0.filter { $0.0 == .r1 || $0.0 == .r2 }.count } == writesBefore)
            #expect(await client.status(user: "cy").activeVersion == v1)

            // The library cannot be talked into it either: a register token with a forged proof is refused
            // by the realms themselves (the client check above is a courtesy).
            let forged = VaultReplaceCredential(version: v1, secret: .init(size: .bits256))
            await #expect(throws: VaultError.self) {
                _ = try await client.register(key: BackupKey(), password: "other pw", user: "cy", replace: .proof(forged))
            }
            #expect(await client.status(user: "cy").activeVersion == v1)
            for i in 0..<5 { #expect(Self.metric(h, i, "coffer_realm_replace_refusals_total") == 1) }

            let newKey = BackupKey()
            let reset = try await client.register(key: newKey, password: "other pw", user: "cy", replace: .reset)
            #expect(reset.complete && reset.version != v1)
            #expect(try await client.recover(password: "other pw", user: "cy").key.constantTimeEquals(newKey))
            #expect(try await Self.resets(h, "cy") == [1, 1, 1, 1, 1])
            for i in 0..<5 { #expect(Self.metric(h, i, "coffer_realm_resets_total") == 1) }
        }
    }

    @Test("CLI: `vault enable` over an existing registration exits 26 and replaces nothing; `--reset` replaces it; change-password with a wrong current password exits 20")
    func cli() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: VaultCLITests.binary.path), "build the coffer binary first (swift build)")
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-vault-replace-\(UUID().uuidString)")
        let layout = RealmClusterLayout(directory: root.appendingPathComponent("cluster"), count: 5)
        let cluster = try await RealmCluster.start(layout: layout)
        defer { try? FileManager.default.removeItem(at: root) }
        try await stopping(cluster) {
            let keyA = BackupKey(), keyB = BackupKey()
            let fileA = root.appendingPathComponent("a.key"), fileB = root.appendingPathComponent("b.key")
            try Data((keyA.digits + "\n").utf8).write(to: fileA)
            try Data((keyB.digits + "\n").utf8).write(to: fileB)
            let base = ["COFFER_VAULT": layout.vaultConfigURL.path, "COFFER_USER": "dee@example.com",
                        "COFFER_HOME": root.appendingPathComponent("home").path]

            var r = try await VaultCLITests.coffer(["vault", "enable", "--key-file", fileA.path], env: base.merging(["COFFER_PASSWORD": "password A"]) { $1 })
            #expect(r.status == 0, "\(r.stderr)")
            r = try await VaultCLITests.coffer(["vault", "enable", "--key-file", fileB.path], env: base.merging(["COFFER_PASSWORD": "password B"]) { $1 })
            #expect(r.status == 26, "\(r.stdout)\n\(r.stderr)")
            #expect(r.stderr.hasPrefix("coffer: this account already has a key in the vault"), "\(r.stderr)")
            #expect(r.stderr.contains("change-password") && r.stderr.contains("--reset"), "\(r.stderr)")
            let out = root.appendingPathComponent("out.key")
            r = try await VaultCLITests.coffer(["vault", "recover", "--key-out", out.path], env: base.merging(["COFFER_PASSWORD": "password A"]) { $1 })
            #expect(r.status == 0, "\(r.stderr)")
            #expect(try String(contentsOf: out, encoding: .utf8).contains(keyA.digits))
            try FileManager.default.removeItem(at: out)

            r = try await VaultCLITests.coffer(["vault", "change-password"],
                                               env: base.merging(["COFFER_CURRENT_PASSWORD": "not it", "COFFER_PASSWORD": "password C"]) { $1 })
            #expect(r.status == 20, "\(r.stderr)")

            r = try await VaultCLITests.coffer(["vault", "enable", "--reset", "--key-file", fileB.path], env: base.merging(["COFFER_PASSWORD": "password B"]) { $1 })
            #expect(r.status == 0, "\(r.stderr)")
            #expect(r.stdout.contains("was reset"), "\(r.stdout)")
            r = try await VaultCLITests.coffer(["vault", "recover", "--key-out", out.path], env: base.merging(["COFFER_PASSWORD": "password B"]) { $1 })
            #expect(r.status == 0, "\(r.stderr)")
            #expect(try String(contentsOf: out, encoding: .utf8).contains(keyB.digits))
            for realm in cluster.realms {
                let text = try #require(realm.service).metrics.render()
                #expect(text.contains("coffer_realm_resets_total 1"), "\(text)")
            }
        }
    }
}
