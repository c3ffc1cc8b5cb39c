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

    static func coffer(_ args: [String], env: [String: String]) throws -> Run {
        let p = Process()
        p.executableURL = binary
        p.arguments = args
        var e = ProcessInfo.processInfo.environment
        for k in ["COFFER_PASSWORD", "COFFER_KEY", "COFFER_USER", "COFFER_VAULT", "COFFER_HOME"] { e[k] = nil }
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

    @Test("enable, recover on a fresh COFFER_HOME, wrong password, change password, disable: messages and exit codes")
    func lifecycle() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.binary.path), "build the coffer binary first (cswift build)")
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-vault-cli-\(UUID().uuidString)")
        let layout = RealmClusterLayout(directory: root.appendingPathComponent("cluster"), count: 5)
        let cluster = try await RealmCluster.start(layout: layout)
        defer { Task { await cluster.stop(); try? FileManager.default.removeItem(at: root) } }
        let homeA = root.appendingPathComponent("deviceA").path, homeB = root.appendingPathComponent("deviceB").path
        let key = BackupKey()
        let keyFile = root.appendingPathComponent("repo.key")
        try Data((key.digits + "\n").utf8).write(to: keyFile)
        let base = ["COFFER_VAULT": layout.vaultConfigURL.path, "COFFER_USER": "alice@example.com"]

        var r = try Self.coffer(["vault", "enable", "--key-file", keyFile.path], env: base.merging(["COFFER_HOME": homeA, "COFFER_PASSWORD": "Tr0ub4dor &3"]) { $1 })
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("5 of 5 realms"))

        r = try Self.coffer(["vault", "recover", "--repository-id", "r1"], env: base.merging(["COFFER_HOME": homeB, "COFFER_PASSWORD": "wrong"]) { $1 })
        #expect(r.status == 3)
        #expect(r.stderr.contains("wrong password; 9 more guesses"))
        #expect(!FileManager.default.fileExists(atPath: homeB + "/keys/r1.key"))

        r = try Self.coffer(["vault", "recover", "--repository-id", "r1"], env: base.merging(["COFFER_HOME": homeB, "COFFER_PASSWORD": "Tr0ub4dor &3"]) { $1 })
        #expect(r.status == 0, "\(r.stderr)")
        let recovered = try BackupKey(digits: String(contentsOfFile: homeB + "/keys/r1.key", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines))
        #expect(recovered.constantTimeEquals(key))
        let mode = try FileManager.default.attributesOfItem(atPath: homeB + "/keys/r1.key")[.posixPermissions] as? Int
        #expect(mode == 0o600)
        #expect(!r.stdout.contains(key.digits) && !r.stderr.contains(key.digits))

        r = try Self.coffer(["vault", "change-password", "--repository-id", "r1"], env: base.merging(["COFFER_HOME": homeB, "COFFER_PASSWORD": "new one"]) { $1 })
        #expect(r.status == 0, "\(r.stderr)")
        r = try Self.coffer(["vault", "recover", "--key-out", root.appendingPathComponent("x.key").path],
                            env: base.merging(["COFFER_HOME": homeB, "COFFER_PASSWORD": "Tr0ub4dor &3"]) { $1 })
        #expect(r.status == 3)

        r = try Self.coffer(["vault", "status"], env: base.merging(["COFFER_HOME": homeB]) { $1 })
        #expect(r.status == 0 && r.stdout.contains("9 guesses left") && r.stdout.contains("5 of 5 realms agree"))

        r = try Self.coffer(["vault", "disable"], env: base.merging(["COFFER_HOME": homeB]) { $1 })
        #expect(r.status == 0, "\(r.stderr)")
        r = try Self.coffer(["vault", "recover", "--key-out", root.appendingPathComponent("y.key").path],
                            env: base.merging(["COFFER_HOME": homeB, "COFFER_PASSWORD": "new one"]) { $1 })
        #expect(r.status == 5 && r.stderr.contains("no key in the vault"))

        // Usage errors say what to do.
        r = try Self.coffer(["vault", "status"], env: ["COFFER_HOME": homeB, "COFFER_USER": "alice@example.com"])
        #expect(r.status == 2 && r.stderr.contains("--vault"))
        r = try Self.coffer(["vault", "enable"], env: base.merging(["COFFER_HOME": homeB, "COFFER_PASSWORD": "x"]) { $1 })
        #expect(r.status == 2 && r.stderr.contains("--key-file"))
        r = try Self.coffer(["vault", "recover", "--key-out", "/tmp/z"], env: base.merging(["COFFER_HOME": homeB]) { $1 })
        #expect(r.status == 2 && r.stderr.contains("COFFER_PASSWORD"))  // no terminal, no password
    }
}
