import Foundation
import Testing

/// Global options before the subcommand mean the same as after it (GlobalOptionOrder).
@Suite struct GlobalOptionOrderTests {
    @Test func optionsBeforeOrAfterTheSubcommand() async throws {
        let box = try Sandbox()
        let data = box.path("data")
        try Fixtures.makeTree(at: data)
        let other = box.path("elsewhere")
        let digits = try await box.initRepository(["--repo", other.path])
        try await box.ok(["--repo", other.path, "backup", data.path])
        let keyFile = box.path("key.txt")
        try Data((digits + "\n").utf8).write(to: keyFile)
        // COFFER_REPO points at a repository that does not exist: only the option finds the real one.
        let env = ["COFFER_REPO": box.path("missing").path]

        let after = try await box.ok(["snapshots", "-r", other.path, "--json"], env: env)
        let before = try await box.ok(["-r", other.path, "--json", "snapshots"], env: env)
        #expect(before.stdout == after.stdout)
        #expect((try before.json() as? [Any])?.count == 1)
        #expect(try await box.ok(["--repo=\(other.path)", "snapshots", "--json"], env: env).stdout == after.stdout)

        // Several, with values, before a subcommand that has its own arguments.
        let ls = try await box.ok(["-v", "--key-file", keyFile.path, "-r", other.path, "ls", "latest", "data/docs"], env: env)
        #expect(ls.stdout.contains("data/docs/notes.txt"))
        #expect(ls.stdout == (try await box.ok(["ls", "latest", "data/docs", "--key-file", keyFile.path, "-r", other.path], env: env)).stdout)
        // Nested subcommands: after `key show`.
        let plain = try await box.ok(["-r", other.path, "key", "show", "--plain"], env: env).stdout
        #expect(plain.trimmingCharacters(in: .whitespacesAndNewlines) == digits)

        // Not a global option: left where it is, and reported as ArgumentParser reports it.
        let bad = try await box.run(["--nonsense", "snapshots"], env: env)
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("--nonsense"), "\(bad)")
        // --version still works at the front.
        #expect(try await box.ok(["--version"]).stdout.isEmpty == false)
    }
}
