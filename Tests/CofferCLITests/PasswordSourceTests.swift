import Foundation
import Testing

/// The vault password from --password-file / COFFER_PASSWORD_FILE and --password-command /
/// COFFER_PASSWORD_COMMAND, against a real `coffer realm cluster`.
@Suite("vault password from a file or a command", .serialized)
struct PasswordSourceTests {
    @Test("file and command sources, their precedence over COFFER_PASSWORD, and clear errors")
    func passwordSources() async throws {
        let box = try Sandbox()
        let cluster = try RealmClusterProcess(in: box.path("cluster"))
        defer { cluster.stop() }
        let password = "amber lantern 31"
        let file = box.path("pw.txt")
        try Data((password + "\n").utf8).write(to: file)
        let base = ["COFFER_VAULT": cluster.vaultConfig.path, "COFFER_USER": "fay@example.com"]

        // init --password reads COFFER_PASSWORD_FILE (no prompt: stdin is closed).
        let key = try await box.initRepository(["--password"], env: base.merging(["COFFER_PASSWORD_FILE": file.path]) { $1 })

        // --password-command: the first line of its output. A wrong COFFER_PASSWORD is not used.
        var r = try await box.run(["vault", "recover", "--key-out", box.path("k1").path, "--password-command", "printf '%s\\nignored\\n' '\(password)'"],
                            env: base.merging(["COFFER_PASSWORD": "wrong one"]) { $1 })
        #expect(r.status == 0, "\(r)")
        #expect(try String(contentsOf: box.path("k1"), encoding: .utf8).filter(\.isHexDigit) == key)

        // --password-file beats COFFER_PASSWORD_COMMAND (which would fail).
        r = try await box.run(["vault", "recover", "--key-out", box.path("k2").path, "--password-file", file.path],
                        env: base.merging(["COFFER_PASSWORD_COMMAND": "exit 1"]) { $1 })
        #expect(r.status == 0, "\(r)")

        // COFFER_PASSWORD_COMMAND beats COFFER_PASSWORD.
        r = try await box.run(["vault", "recover", "--key-out", box.path("k3").path],
                        env: base.merging(["COFFER_PASSWORD_COMMAND": "cat '\(file.path)'", "COFFER_PASSWORD": "wrong one"]) { $1 })
        #expect(r.status == 0, "\(r)")

        // Failures are usage errors that name the source, and spend no guess.
        let before = try await box.ok(["vault", "status"], env: base).stdout
        r = try await box.run(["vault", "recover", "--key-out", box.path("k4").path, "--password-command", "echo oops >&2; exit 3"], env: base)
        #expect(r.status == 64 && r.stderr.contains("coffer: --password-command: the password command failed (exit status 3)"), "\(r)")
        r = try await box.run(["vault", "recover", "--key-out", box.path("k4").path, "--password-file", box.path("missing").path], env: base)
        #expect(r.status == 64 && r.stderr.contains("cannot read the password file \(box.path("missing").path)"), "\(r)")
        r = try await box.run(["vault", "recover", "--key-out", box.path("k4").path, "--password-command", "true"], env: base)
        #expect(r.status == 64 && r.stderr.contains("gave an empty password"), "\(r)")
        r = try await box.run(["vault", "status"], env: base)
        #expect(r.stdout == before && r.stdout.contains("guesses left"), "no guess was spent:\n\(before)\n\(r)")
        #expect(!r.stdout.contains(password) && !r.stderr.contains(password))
    }
}
