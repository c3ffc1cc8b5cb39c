import CofferCore
import CofferRealm
import Foundation
import Testing
@testable import CofferVault

/// The `coffer vault` commands as a person runs them (the built `.build/debug/coffer`), against a
/// 5-realm cluster on loopback.
@Suite("coffer vault CLI", .serialized)
struct VaultCLITests {
    static var binary: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent(".build/debug/coffer")
    }

    struct Run {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// Runs the binary on a thread of its own: the test's realms run in this process, and blocking a
    /// cooperative-pool thread on the child would starve them (2 cores, 2 pool threads).
    static func coffer(_ args: [String], env: [String: String]) async throws -> Run {
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(with: Result { try runBlocking(args, env: env) })
            }
        }
    }

    private static func runBlocking(_ args: [String], env: [String: String]) throws -> Run {
        let p = Process()
        p.executableURL = binary
        p.arguments = args
        var e = ProcessInfo.processInfo.environment
        for k in ["COFFER_PASSWORD", "COFFER_CURRENT_PASSWORD", "COFFER_KEY", "COFFER_USER", "COFFER_VAULT", "COFFER_HOME", "COFFER_REPO"] { e[k] = nil }
        // A generous wait for each realm (a test that wants a short one sets its own): realms that
        // are up answer at once on an idle machine, and a loaded one must not turn them into "down".
        e["COFFER_VAULT_TIMEOUT"] = "60"
        for (k, v) in env { e[k] = v }
        p.environment = e
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = FileHandle.nullDevice
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile(), r = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Run(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: r, as: UTF8.self))
    }

    @Test("init --password, back up, then on a new device vault recover --repo and restore")
    func initWithPasswordAndRecoverByRepository() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.binary.path), "build the coffer binary first (swift build)")
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-vault-init-\(UUID().uuidString)")
        let layout = RealmClusterLayout(directory: root.appendingPathComponent("cluster"), count: 5)
        let cluster = try await RealmCluster.start(layout: layout)
        defer { try? FileManager.default.removeItem(at: root) }
        try await stopping(cluster) {
            let repo = root.appendingPathComponent("repo").path
            let data = root.appendingPathComponent("data")
            try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true)
            try Data("a message worth keeping\n".utf8).write(to: data.appendingPathComponent("note.txt"))
            let base = ["COFFER_VAULT": layout.vaultConfigURL.path, "COFFER_USER": "carol@example.com", "COFFER_REPO": repo]
            let phone = base.merging(["COFFER_HOME": root.appendingPathComponent("phone").path, "COFFER_PASSWORD": "river stone 42"]) { $1 }

            var r = try await Self.coffer(["init", "--password"], env: phone)
            #expect(r.status == 0, "\(r.stderr)")
            #expect(r.stdout.contains("stored at 5 of 5 realms"))
            r = try await Self.coffer(["backup", data.path, "--json"], env: phone)
            #expect(r.status == 0, "\(r.stderr)")

            // A new device: no key file, only the account and the password.
            let newPhone = base.merging(["COFFER_HOME": root.appendingPathComponent("new-phone").path]) { $1 }
            r = try await Self.coffer(["vault", "recover"], env: newPhone.merging(["COFFER_PASSWORD": "river stone 41"]) { $1 })
            #expect(r.status == 20 && r.stderr.contains("9 more guesses"), "\(r.stderr)")
            r = try await Self.coffer(["restore", "latest", "--target", root.appendingPathComponent("out").path], env: newPhone)
            #expect(r.status == 15, "no key yet: \(r.stderr)")
            r = try await Self.coffer(["vault", "recover"], env: newPhone.merging(["COFFER_PASSWORD": "river stone 42"]) { $1 })
            #expect(r.status == 0, "\(r.stderr)")
            #expect(r.stdout.contains("Recovered the key of repository"))
            r = try await Self.coffer(["restore", "latest", "--target", root.appendingPathComponent("out").path], env: newPhone)
            #expect(r.status == 0, "\(r.stderr)")
            let restored = try String(contentsOf: root.appendingPathComponent("out/data/note.txt"), encoding: .utf8)
            #expect(restored == "a message worth keeping\n")

            // A vault configuration that does not exist stops init before anything is created.
            let other = root.appendingPathComponent("repo2").path
            r = try await Self.coffer(["init", "--password", "--repo", other],
                                      env: phone.merging(["COFFER_VAULT": root.appendingPathComponent("missing.json").path]) { $1 })
            #expect(r.status == 64, "\(r.stderr)")
            #expect(!FileManager.default.fileExists(atPath: other + "/config"))
        }
    }

    @Test("enable, recover on a fresh COFFER_HOME, wrong password, change password, disable: messages and exit codes")
    func lifecycle() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.binary.path), "build the coffer binary first (swift build)")
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-vault-cli-\(UUID().uuidString)")
        let layout = RealmClusterLayout(directory: root.appendingPathComponent("cluster"), count: 5)
        let cluster = try await RealmCluster.start(layout: layout)
        defer { try? FileManager.default.removeItem(at: root) }
        try await stopping(cluster) {
            let homeA = root.appendingPathComponent("deviceA").path, homeB = root.appendingPathComponent("deviceB").path
            let key = BackupKey()
            let keyFile = root.appendingPathComponent("repo.key")
            try Data((key.digits + "\n").utf8).write(to: keyFile)
            let base = ["COFFER_VAULT": layout.vaultConfigURL.path, "COFFER_USER": "alice@example.com"]

            var r = try await Self.coffer(["vault", "enable", "--key-file", keyFile.path], env: base.merging(["COFFER_HOME": homeA, "COFFER_PASSWORD": "Tr0ub4dor &3"]) { $1 })
            #expect(r.status == 0, "\(r.stderr)")
            #expect(r.stdout.contains("5 of 5 realms"))

            r = try await Self.coffer(["vault", "recover", "--repository-id", "r1"], env: base.merging(["COFFER_HOME": homeB, "COFFER_PASSWORD": "wrong"]) { $1 })
            #expect(r.status == 20)
            #expect(r.stderr.contains("wrong password; 9 more guesses"))
            #expect(!FileManager.default.fileExists(atPath: homeB + "/keys/r1.key"))

            r = try await Self.coffer(["vault", "recover", "--repository-id", "r1"], env: base.merging(["COFFER_HOME": homeB, "COFFER_PASSWORD": "Tr0ub4dor &3"]) { $1 })
            #expect(r.status == 0, "\(r.stderr)")
            let recovered = try BackupKey(digits: String(contentsOfFile: homeB + "/keys/r1.key", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines))
            #expect(recovered.constantTimeEquals(key))
            let mode = try FileManager.default.attributesOfItem(atPath: homeB + "/keys/r1.key")[.posixPermissions] as? Int
            #expect(mode == 0o600)
            #expect(!r.stdout.contains(key.digits) && !r.stderr.contains(key.digits))

            r = try await Self.coffer(["vault", "change-password"],
                                      env: base.merging(["COFFER_HOME": homeB, "COFFER_CURRENT_PASSWORD": "Tr0ub4dor &3", "COFFER_PASSWORD": "new one"]) { $1 })
            #expect(r.status == 0, "\(r.stderr)")
            r = try await Self.coffer(["vault", "recover", "--key-out", root.appendingPathComponent("x.key").path],
                                env: base.merging(["COFFER_HOME": homeB, "COFFER_PASSWORD": "Tr0ub4dor &3"]) { $1 })
            #expect(r.status == 20)

            r = try await Self.coffer(["vault", "status"], env: base.merging(["COFFER_HOME": homeB]) { $1 })
            #expect(r.status == 0 && r.stdout.contains("9 guesses left") && r.stdout.contains("5 of 5 realms agree"))

            r = try await Self.coffer(["vault", "disable"], env: base.merging(["COFFER_HOME": homeB]) { $1 })
            #expect(r.status == 0, "\(r.stderr)")
            r = try await Self.coffer(["vault", "recover", "--key-out", root.appendingPathComponent("y.key").path],
                                env: base.merging(["COFFER_HOME": homeB, "COFFER_PASSWORD": "new one"]) { $1 })
            #expect(r.status == 22 && r.stderr.contains("no key in the vault"))

            // Usage errors say what to do.
            r = try await Self.coffer(["vault", "status"], env: ["COFFER_HOME": homeB, "COFFER_USER": "alice@example.com"])
            #expect(r.status == 64 && r.stderr.contains("--vault"))
            r = try await Self.coffer(["vault", "enable"], env: base.merging(["COFFER_HOME": homeB, "COFFER_PASSWORD": "x"]) { $1 })
            #expect(r.status == 64 && r.stderr.contains("--key-file"))
            r = try await Self.coffer(["vault", "recover", "--key-out", "/tmp/z"], env: base.merging(["COFFER_HOME": homeB]) { $1 })
            #expect(r.status == 64 && r.stderr.contains("COFFER_PASSWORD"))  // no terminal, no password
        }
    }
}
