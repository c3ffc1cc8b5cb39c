import CofferCore
import CofferRealm
import Foundation
import Testing
@testable import CofferVault

/// A storage provider serving old data, caught by the heads anchored in the vault (and the device's
/// own heads): the `coffer` binary on a real local repository, 5 realms on loopback.
@Suite("Rollback refused", .serialized)
struct RollbackCLITests {
    static let fm = FileManager.default
    static let staleWords = "storage provider is serving old or incomplete data"

    /// A phone with a repository, a vault configured through the environment, two backups.
    struct Setup {
        let root: URL
        let cluster: RealmCluster
        let repo: String
        let data: URL
        let phone: [String: String]
        let keyFile: String
        var vault: [String: String]

        /// A device that has never seen this repository: its own COFFER_HOME, the key given as a file.
        func newDevice(_ name: String, vault: Bool = true) -> [String: String] {
            var env = ["COFFER_HOME": root.appendingPathComponent(name).path, "COFFER_REPO": repo]
            if vault { env.merge(self.vault) { $1 } }
            return env
        }

        func objects(_ dir: String) throws -> [String] {
            ((try? fm.contentsOfDirectory(atPath: repo + "/" + dir)) ?? []).filter { !$0.hasPrefix(".") }.sorted()
        }

        func stop() async {
            await cluster.stop()
            try? fm.removeItem(at: root)
        }
    }

    static func setUp(_ name: String) async throws -> Setup {
        try #require(fm.isExecutableFile(atPath: VaultCLITests.binary.path), "build the coffer binary first (swift build)")
        let root = fm.temporaryDirectory.appendingPathComponent("coffer-rollback-\(name)-\(UUID().uuidString)")
        let layout = RealmClusterLayout(directory: root.appendingPathComponent("cluster"), count: 5)
        let cluster = try await RealmCluster.start(layout: layout)
        let repo = root.appendingPathComponent("repo").path
        let data = root.appendingPathComponent("data")
        try fm.createDirectory(at: data, withIntermediateDirectories: true)
        try Data("first message\n".utf8).write(to: data.appendingPathComponent("chat.txt"))
        let vault = ["COFFER_VAULT": layout.vaultConfigURL.path, "COFFER_USER": "gil@example.com"]
        let phone = vault.merging(["COFFER_HOME": root.appendingPathComponent("phone").path, "COFFER_REPO": repo]) { $1 }
        let r = try await VaultCLITests.coffer(["init"], env: phone)
        try #require(r.status == 0, "\(r.stderr)")
        let keys = root.appendingPathComponent("phone/keys")
        let keyFile = keys.appendingPathComponent(try #require(try fm.contentsOfDirectory(atPath: keys.path).first { $0.hasSuffix(".key") })).path
        return Setup(root: root, cluster: cluster, repo: repo, data: data, phone: phone, keyFile: keyFile, vault: vault)
    }

    static func backup(_ s: Setup, _ text: String) async throws -> String {
        try Data(text.utf8).write(to: s.data.appendingPathComponent("chat.txt"))
        try Data(text.utf8).write(to: s.data.appendingPathComponent("photo-\(UUID().uuidString).jpg"))
        let r = try await VaultCLITests.coffer(["backup", s.data.path, "--json"], env: s.phone)
        try #require(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("backup head anchored in the vault") && r.stderr.contains("5 of 5 realms"), "\(r.stderr)")
        let json = try JSONSerialization.jsonObject(with: Data((r.stdout.split(separator: "\n").last ?? "").utf8)) as? [String: Any]
        return try #require(json?["snapshot_id"] as? String)
    }

    static func restore(_ s: Setup, env: [String: String], into name: String) async throws -> VaultCLITests.Run {
        try await VaultCLITests.coffer(["restore", "latest", "--target", s.root.appendingPathComponent(name).path, "--key-file", s.keyFile], env: env)
    }

    /// Nothing was written: the target is missing or empty.
    static func untouched(_ s: Setup, _ name: String) -> Bool {
        ((try? fm.contentsOfDirectory(atPath: s.root.appendingPathComponent(name).path)) ?? []).isEmpty
    }

    @Test("the newest snapshot hidden: restore, backup and prune refused (device heads and vault heads); nothing restored or changed")
    func hiddenSnapshot() async throws {
        let s = try await Self.setUp("hide")
        try await stopping(s) {
            _ = try await Self.backup(s, "one\n")
            let newest = try await Self.backup(s, "one two\n")
            let hidden = s.root.appendingPathComponent("hidden-snapshot")
            try Self.fm.moveItem(atPath: s.repo + "/snapshots/" + newest, toPath: hidden.path)
            let before = try s.objects("data") + s.objects("index") + s.objects("snapshots")

            // A new device, no local head state: the vault's head names the hidden snapshot.
            var r = try await Self.restore(s, env: s.newDevice("tablet"), into: "out-tablet")
            #expect(r.status == 14, "\(r.stderr)")
            #expect(r.stderr.contains(Self.staleWords) && r.stderr.contains(String(newest.prefix(8))), "\(r.stderr)")
            #expect(r.stderr.contains("latest backup: "))
            #expect(Self.untouched(s, "out-tablet"))
            // The phone itself (its own head store), prune and backup included: refused before any change.
            r = try await Self.restore(s, env: s.phone, into: "out-phone")
            #expect(r.status == 14 && Self.untouched(s, "out-phone"), "\(r.stderr)")
            r = try await VaultCLITests.coffer(["prune", "--now"], env: s.phone)
            #expect(r.status == 14 && r.stderr.contains(Self.staleWords), "\(r.stderr)")
            r = try await VaultCLITests.coffer(["backup", s.data.path], env: s.phone)
            #expect(r.status == 14, "\(r.stderr)")
            #expect(try s.objects("data") + s.objects("index") + s.objects("snapshots") == before)

            // The provider serves the snapshot again: everything works.
            try Self.fm.moveItem(atPath: hidden.path, toPath: s.repo + "/snapshots/" + newest)
            r = try await Self.restore(s, env: s.newDevice("tablet"), into: "out-tablet")
            #expect(r.status == 0, "\(r.stderr)")
            #expect(try String(contentsOf: s.root.appendingPathComponent("out-tablet/data/chat.txt"), encoding: .utf8) == "one two\n")
        }
    }

    @Test("an older copy of the whole repository, served to a new device: refused through the vault head, and remembered offline")
    func olderCopy() async throws {
        let s = try await Self.setUp("copy")
        try await stopping(s) {
            _ = try await Self.backup(s, "one\n")
            let old = s.root.appendingPathComponent("repo-after-backup-1")
            try Self.fm.copyItem(atPath: s.repo, toPath: old.path)
            let newest = try await Self.backup(s, "one two\n")
            try Self.fm.removeItem(atPath: s.repo)
            try Self.fm.moveItem(atPath: old.path, toPath: s.repo)

            // Without the vault, a new device cannot tell: the old copy is self-consistent.
            var r = try await Self.restore(s, env: s.newDevice("laptop", vault: false), into: "out-novault")
            #expect(r.status == 0, "\(r.stderr)")
            #expect(try String(contentsOf: s.root.appendingPathComponent("out-novault/data/chat.txt"), encoding: .utf8) == "one\n")

            // With the vault: the anchored head says seq 2 (the newest snapshot), the copy shows seq 1.
            let tablet = s.newDevice("tablet")
            r = try await Self.restore(s, env: tablet, into: "out-tablet")
            #expect(r.status == 14, "\(r.stderr)")
            #expect(r.stderr.contains(Self.staleWords) && r.stderr.contains(String(newest.prefix(8))), "\(r.stderr)")
            #expect(r.stderr.contains("latest backup: "), "\(r.stderr)")
            #expect(Self.untouched(s, "out-tablet"))
            // The anchored heads are now in the tablet's head store: refused offline too (vault off).
            r = try await Self.restore(s, env: tablet.merging(["COFFER_VAULT_HEADS": "off"]) { $1 }, into: "out-tablet")
            #expect(r.status == 14 && Self.untouched(s, "out-tablet"), "\(r.stderr)")
            // `vault recover --repo` on yet another device says the same before anything is restored.
            r = try await VaultCLITests.coffer(["vault", "enable", "--key-file", s.keyFile], env: s.phone.merging(["COFFER_PASSWORD": "tide pool 7"]) { $1 })
            #expect(r.status == 0, "\(r.stderr)")
            r = try await VaultCLITests.coffer(["vault", "recover", "--repo", s.repo],
                                               env: s.newDevice("desktop").merging(["COFFER_PASSWORD": "tide pool 7"]) { $1 })
            #expect(r.status == 14 && r.stdout.contains("latest backup: ") && r.stderr.contains(Self.staleWords), "\(r.stdout)\n\(r.stderr)")
        }
    }

    @Test("an old index replayed: the newest snapshot's blobs are in no index; refused before any file is written")
    func oldIndex() async throws {
        let s = try await Self.setUp("index")
        try await stopping(s) {
            _ = try await Self.backup(s, "one\n")
            let oldIndex = s.root.appendingPathComponent("index-after-backup-1")
            try Self.fm.copyItem(atPath: s.repo + "/index", toPath: oldIndex.path)
            _ = try await Self.backup(s, "one two three\n")
            try Self.fm.removeItem(atPath: s.repo + "/index")
            try Self.fm.copyItem(atPath: oldIndex.path, toPath: s.repo + "/index")

            for (env, out) in [(s.phone, "out-phone"), (s.newDevice("tablet"), "out-tablet"), (s.newDevice("laptop", vault: false), "out-laptop")] {
                let r = try await Self.restore(s, env: env, into: out)
                #expect(r.status == 14, "\(r.stderr)")
                #expect(r.stderr.contains(Self.staleWords) && r.stderr.contains("Nothing was restored"), "\(r.stderr)")
                #expect(Self.untouched(s, out))
            }
        }
    }

    @Test("a head that cannot be anchored (3 of 5 realms down) is a warning; the next run anchors it, then a new device is protected")
    func anchorRetry() async throws {
        let s = try await Self.setUp("retry")
        try await stopping(s) {
            _ = try await Self.backup(s, "one\n")
            // Three realms unreachable: the same vault.json with their URLs on a closed port; each call to
            // them costs the timeout (the HTTP client retries the connection until then), kept at 1 s.
            let good = try #require(s.vault["COFFER_VAULT"])
            var config = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: good))) as? [String: Any])
            var realms = try #require(config["realms"] as? [[String: Any]])
            for i in 0..<3 { realms[i]["url"] = "http://127.0.0.1:1" }
            config["realms"] = realms
            let broken = URL(fileURLWithPath: good).deletingLastPathComponent().appendingPathComponent("vault-3-down.json")
            try JSONSerialization.data(withJSONObject: config).write(to: broken)
            try Data("one two\n".utf8).write(to: s.data.appendingPathComponent("chat.txt"))
            var r = try await VaultCLITests.coffer(["backup", s.data.path, "--json"], env: s.phone.merging(["COFFER_VAULT": broken.path, "COFFER_VAULT_TIMEOUT": "1"]) { $1 })
            #expect(r.status == 0, "\(r.stderr)")
            #expect(r.stderr.contains("warning: cannot read the backup heads"), "\(r.stderr)")
            #expect(r.stderr.contains("could not be anchored in the vault") && r.stderr.contains("The backup itself is complete"), "\(r.stderr)")
            let newest = try #require((try JSONSerialization.jsonObject(with: Data((r.stdout.split(separator: "\n").last ?? "").utf8)) as? [String: Any])?["snapshot_id"] as? String)

            // The phone's next run (here a restore) stores the missing head first.
            r = try await Self.restore(s, env: s.phone, into: "out-phone")
            #expect(r.status == 0, "\(r.stderr)")
            #expect(r.stderr.contains("backup head anchored in the vault (snapshot \(newest.prefix(8)), seq 2"), "\(r.stderr)")
            // Now a rollback to before that snapshot is caught on a new device.
            try Self.fm.moveItem(atPath: s.repo + "/snapshots/" + newest, toPath: s.root.appendingPathComponent("hidden").path)
            r = try await Self.restore(s, env: s.newDevice("tablet"), into: "out-tablet")
            #expect(r.status == 14 && r.stderr.contains(Self.staleWords), "\(r.stderr)")
        }
    }
}

extension RollbackCLITests.Setup: StoppableTestService {}
