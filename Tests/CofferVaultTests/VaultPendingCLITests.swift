import CofferCore
import CofferRealm
import Foundation
import Testing
@testable import CofferVault

/// Issue 11, problem 1: a change of password is complete only when every realm has it. The `coffer`
/// binary against 5 realms on loopback, with a realm operator who kept a copy of its database.
@Suite("coffer vault: changes complete only at every realm", .serialized)
struct VaultPendingCLITests {
    static let fm = FileManager.default

    /// Copies realm `i`'s SQLite files (database, WAL) while it is stopped.
    static func copyDatabase(_ cluster: RealmCluster, _ i: Int, to dir: URL) async throws {
        await cluster.realms[i].stop()
        try fm.createDirectory(at: dir, withIntermediateDirectories: true)
        let db = cluster.realms[i].directory.databaseFile
        for suffix in ["", "-wal", "-shm"] where fm.fileExists(atPath: db.path + suffix) {
            try fm.copyItem(atPath: db.path + suffix, toPath: dir.appendingPathComponent(db.lastPathComponent + suffix).path)
        }
        try await restart(cluster.realms[i])
    }

    /// Puts the copy back in place of realm `i`'s database (the operator restores its old copy).
    static func restoreDatabase(_ cluster: RealmCluster, _ i: Int, from dir: URL) async throws {
        await cluster.realms[i].stop()
        let db = cluster.realms[i].directory.databaseFile
        for suffix in ["", "-wal", "-shm"] {
            try? fm.removeItem(atPath: db.path + suffix)
            let copy = dir.appendingPathComponent(db.lastPathComponent + suffix)
            if fm.fileExists(atPath: copy.path) { try fm.copyItem(atPath: copy.path, toPath: db.path + suffix) }
        }
        try await restart(cluster.realms[i])
    }

    @Test("change-password with 2 realms down says which realms still accept the old password (exit 25); the next backup finishes it; then a copied realm plus the stale ones cannot recover with the old password")
    func changeIsCompleteOnlyAtEveryRealm() async throws {
        try #require(Self.fm.isExecutableFile(atPath: VaultCLITests.binary.path), "build the coffer binary first (swift build)")
        let root = Self.fm.temporaryDirectory.appendingPathComponent("coffer-vault-pending-\(UUID().uuidString)")
        let layout = RealmClusterLayout(directory: root.appendingPathComponent("cluster"), count: 5)
        // The test stops realms and starts them again on the same ports.
        let cluster = try await startOnFixedPorts(layout)
        defer { try? Self.fm.removeItem(at: root) }
        try await stopping(cluster) {
            let config = try cluster.vaultConfiguration.validated()
            let data = root.appendingPathComponent("data")
            try Self.fm.createDirectory(at: data, withIntermediateDirectories: true)
            try Data("hello\n".utf8).write(to: data.appendingPathComponent("note.txt"))
            let home = root.appendingPathComponent("phone")
            let phone = ["COFFER_VAULT": layout.vaultConfigURL.path, "COFFER_USER": "nia@example.com",
                         "COFFER_HOME": home.path, "COFFER_REPO": root.appendingPathComponent("repo").path,
                         "COFFER_VAULT_TIMEOUT": "60"]
            var r = try await VaultCLITests.coffer(["init"], env: phone)
            try #require(r.status == 0, "\(r.stderr)")

            // Problem 7 and the one error prefix: a short password is refused before anything is sent.
            r = try await VaultCLITests.coffer(["vault", "enable", "--timeout", "60"], env: phone.merging(["COFFER_PASSWORD": "five5"]) { $1 })
            #expect(r.status == 64, "\(r.stderr)")
            #expect(r.stderr.hasPrefix("coffer: the password is too short") && r.stderr.contains("at least 6 characters"), "\(r.stderr)")
            #expect(await VaultClient(configuration: config, tokens: try await DevelopmentTenant.forConfiguration(cluster.vaultConfiguration, at: layout.vaultConfigURL))
                .status(user: "nia@example.com").realms.allSatisfy { $0.state == .notRegistered })

            r = try await VaultCLITests.coffer(["vault", "enable", "--timeout", "60"], env: phone.merging(["COFFER_PASSWORD": "old password A"]) { $1 })
            #expect(r.status == 0, "\(r.stderr)")
            #expect(r.stdout.contains("stored at 5 of 5 realms: every realm confirmed"), "\(r.stdout)")

            // Realm 2's operator keeps a copy of its database (the record for password A, full budget).
            let copy = root.appendingPathComponent("realm-2-copy")
            try await Self.copyDatabase(cluster, 2, to: copy)

            // The change while realms 3 and 4 are unreachable: in effect, but not complete, and said so.
            await cluster.realms[3].stop()
            await cluster.realms[4].stop()
            r = try await VaultCLITests.coffer(["vault", "change-password", "--timeout", "60"],
                                               env: phone.merging(["COFFER_CURRENT_PASSWORD": "old password A", "COFFER_PASSWORD": "new password B"]) { $1 })
            #expect(r.status == 25, "\(r.stdout)\n\(r.stderr)")
            #expect(!r.stdout.contains("no longer works") && !r.stderr.contains("no longer works"))
            #expect(r.stdout.contains("3 of 5 realms"), "\(r.stdout)")
            for i in [3, 4] {
                #expect(r.stderr.contains("realm \(config.realms[i].id.hex) (\(config.realms[i].baseURL)) still accepts the old password"), "\(r.stderr)")
            }
            for i in [0, 1, 2] { #expect(!r.stderr.contains(config.realms[i].id.hex)) }
            let pendingFiles = try Self.fm.contentsOfDirectory(atPath: home.appendingPathComponent("vault").path).filter { $0.hasPrefix("pending-") }
            #expect(pendingFiles.count == 1)
            let pendingFile = home.appendingPathComponent("vault").appendingPathComponent(pendingFiles.first ?? "none")
            #expect(try Self.fm.attributesOfItem(atPath: pendingFile.path)[.posixPermissions] as? Int == 0o600)

            // Still down: status says the change is pending, names the realms, exit 25.
            r = try await VaultCLITests.coffer(["vault", "status", "--timeout", "60"], env: phone)
            #expect(r.status == 25, "\(r.stdout)\n\(r.stderr)")
            #expect(r.stderr.contains(config.realms[3].id.hex) && r.stderr.contains(config.realms[4].id.hex))

            // A backup while they are still down retries it, says so, and --json carries the same.
            r = try await VaultCLITests.coffer(["backup", data.path, "--json"], env: phone)
            #expect(r.status == 0, "\(r.stderr)")
            struct Pending: Decodable { var vaultChangePendingAt: [String]? }
            let decoder = JSONDecoder()
            decoder.keyDecodingStrategy = .convertFromSnakeCase
            // JSON Lines: the summary is the last line (status lines may come before it).
            let json = try decoder.decode(Pending.self, from: Data((r.stdout.split(separator: "\n").last ?? "").utf8))
            #expect(json.vaultChangePendingAt == [config.realms[3].id.hex, config.realms[4].id.hex], "\(r.stdout)")
            #expect(r.stderr.contains("still accepts the old password"), "\(r.stderr)")

            // Back up: the backup retries the pending change first and completes it.
            try await restart(cluster.realms[3])
            try await restart(cluster.realms[4])
            r = try await VaultCLITests.coffer(["backup", data.path], env: phone)
            #expect(r.status == 0, "\(r.stderr)")
            #expect(r.stderr.contains("the pending vault change is now complete: all 5 realms have it; the old password no longer works at any realm"), "\(r.stderr)")
            #expect(!Self.fm.fileExists(atPath: pendingFile.path))

            // The copied realm 2 comes back with the old record; realms 0 and 1 are away. The old password
            // (with realms 3 and 4, which the change reached) recovers nothing.
            try await Self.restoreDatabase(cluster, 2, from: copy)
            await cluster.realms[0].stop()
            await cluster.realms[1].stop()
            let out = root.appendingPathComponent("stolen.key")
            let newDevice = phone.merging(["COFFER_HOME": root.appendingPathComponent("thief").path, "COFFER_PASSWORD": "old password A"]) { $1 }
            r = try await VaultCLITests.coffer(["vault", "recover", "--timeout", "60", "--key-out", out.path], env: newDevice)
            #expect(r.status != 0, "recovered with the old password: \(r.stdout)")
            #expect(!Self.fm.fileExists(atPath: out.path))
            #expect(r.stderr.hasPrefix("coffer: "), "\(r.stderr)")
            // And with all five back, the old password is simply wrong; the new one works.
            try await restart(cluster.realms[0])
            try await restart(cluster.realms[1])
            r = try await VaultCLITests.coffer(["vault", "recover", "--timeout", "60", "--key-out", out.path], env: newDevice)
            #expect(r.status == 20 && !Self.fm.fileExists(atPath: out.path), "\(r.stderr)")
            r = try await VaultCLITests.coffer(["vault", "recover", "--timeout", "60", "--key-out", out.path],
                                               env: newDevice.merging(["COFFER_PASSWORD": "new password B"]) { $1 })
            #expect(r.status == 0 && Self.fm.fileExists(atPath: out.path), "\(r.stderr)")
        }
    }
}
