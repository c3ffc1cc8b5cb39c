import CofferCore
import CofferRealm
import Foundation
import Testing

/// `coffer key rotate` with the vault (5 realms on loopback): a wrong password changes nothing; the
/// right one puts the new key behind the same password; a new device recovers it and restores;
/// a crash between the vault registration and the commit leaves a vault key that opens the
/// repository (the staged generation is committed when that key is used).
@Suite("coffer key rotate with the vault", .serialized)
struct KeyRotateVaultTests {
    static func coffer(_ args: [String], env: [String: String]) async throws -> VaultCLITests.Run {
        try await VaultCLITests.coffer(args, env: env)
    }

    static func keyFiles(_ home: URL) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: home.appendingPathComponent("keys").path)) ?? [])
            .filter { $0.hasSuffix(".key") }.sorted()
    }

    @Test func rotateReRegistersTheVaultAndSurvivesACrashAfterRegistering() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: VaultCLITests.binary.path), "build the coffer binary first")
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-rotate-vault-\(UUID().uuidString)")
        let layout = RealmClusterLayout(directory: root.appendingPathComponent("cluster"), count: 5)
        let cluster = try await RealmCluster.start(layout: layout)
        defer { try? FileManager.default.removeItem(at: root) }
        try await stopping(cluster) {
            let repo = root.appendingPathComponent("repo").path
            let data = root.appendingPathComponent("data")
            try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true)
            let note = data.appendingPathComponent("note.txt")
            let phoneHome = root.appendingPathComponent("phone")
            let base = ["COFFER_VAULT": layout.vaultConfigURL.path, "COFFER_USER": "dana@example.com", "COFFER_REPO": repo]
            let phone = base.merging(["COFFER_HOME": phoneHome.path, "COFFER_PASSWORD": "tide pool 7"]) { $1 }

            var r = try await Self.coffer(["init", "--password"], env: phone)
            #expect(r.status == 0, "\(r.stderr)")
            for i in 0..<2 {
                try Data("message \(i)\n".utf8).write(to: note)
                r = try await Self.coffer(["backup", data.path, "--json"], env: phone)
                #expect(r.status == 0, "\(r.stderr)")
            }
            let firstKeys = Self.keyFiles(phoneHome)
            #expect(firstKeys.count == 1)

            // A wrong password: exit 20, nothing written (no new generation, same key files).
            r = try await Self.coffer(["key", "rotate"], env: phone.merging(["COFFER_PASSWORD": "tide pool 8"]) { $1 })
            #expect(r.status == 20, "\(r.stdout)\(r.stderr)")
            #expect(!FileManager.default.fileExists(atPath: repo + "/gen"))
            #expect(Self.keyFiles(phoneHome) == firstKeys)

            // The right one: rotated, the vault holds the new key.
            r = try await Self.coffer(["key", "rotate"], env: phone)
            #expect(r.status == 0, "\(r.stderr)")
            #expect(r.stdout.contains("The vault now holds the new key"), "\(r.stdout)")
            let secondKeys = Self.keyFiles(phoneHome)
            #expect(secondKeys.count == 1 && secondKeys != firstKeys)

            // A new device with only the password gets the new key and restores.
            let tablet = base.merging(["COFFER_HOME": root.appendingPathComponent("tablet").path, "COFFER_PASSWORD": "tide pool 7"]) { $1 }
            r = try await Self.coffer(["vault", "recover"], env: tablet)
            #expect(r.status == 0, "\(r.stderr)")
            let out = root.appendingPathComponent("out")
            r = try await Self.coffer(["restore", "latest", "--target", out.path], env: tablet)
            #expect(r.status == 0, "\(r.stderr)")
            // The rotation anchored the re-encrypted snapshot's head under the new repository id.
            #expect(r.stderr.contains("latest backup: ") && r.stderr.contains("anchored in the vault)"), "\(r.stderr)")
            #expect(try String(contentsOf: out.appendingPathComponent("data/note.txt"), encoding: .utf8) == "message 1\n")

            // Crash after the vault registration, before the commit.
            r = try await Self.coffer(["key", "rotate", "-q"], env: phone.merging(["COFFER_TEST_CRASH_AT": "registered"]) { $1 })
            #expect(r.status != 0)
            #expect(Self.keyFiles(phoneHome).count == 2, "old and new key files both on the device until the clean-up")
            // Another device recovers what the vault now holds (the new key) and can use it: the staged
            // generation is committed on first use.
            let laptop = base.merging(["COFFER_HOME": root.appendingPathComponent("laptop").path, "COFFER_PASSWORD": "tide pool 7"]) { $1 }
            r = try await Self.coffer(["vault", "recover"], env: laptop)
            #expect(r.status == 0, "the vault's key must open the repository after a crash past the registration: \(r.stderr)")
            let out2 = root.appendingPathComponent("out2")
            r = try await Self.coffer(["restore", "latest", "--target", out2.path], env: laptop)
            #expect(r.status == 0, "\(r.stderr)")
            #expect(try String(contentsOf: out2.appendingPathComponent("data/note.txt"), encoding: .utf8) == "message 1\n")
            // The phone finishes the job (clean-up only), keeping just the newest key.
            r = try await Self.coffer(["key", "rotate", "-q"], env: phone)
            #expect(r.status == 0, "\(r.stderr)")
            #expect(Self.keyFiles(phoneHome).count == 1 && Self.keyFiles(phoneHome) != secondKeys)
            r = try await Self.coffer(["check", "--read-data"], env: phone)
            #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
            // The tablet's key (from before the second rotation) is now refused with exit 12.
            r = try await Self.coffer(["snapshots"], env: tablet)
            #expect(r.status == 12 && r.stderr.contains("replaced by a key rotation"), "\(r.stderr)")
        }
    }
}
