import Foundation
import Testing

/// Every command with `--json`, run through the real binary, each line of its output checked
/// against its schema in docs/schemas/ (and the error line on stderr against error.json).
@Suite("--json output matches docs/schemas", .serialized)
struct JSONOutputTests {
    /// One command run: its arguments (`{data}`, `{root}` replaced), the schema of its stdout, the
    /// exit status it must end with, extra environment.
    struct Step: Sendable {
        var args: [String]
        var schema: String
        var status: Int32 = 0
        var env: [String: String] = [:]
        /// Minimum number of status lines to see (with a high COFFER_PROGRESS_FPS).
        var statusLines = 0
    }

    /// The repository commands, in an order that works on one fresh repository. Add new commands
    /// here (one entry each, with the schema of their output).
    static let repositoryCommands: [Step] = [
        Step(args: ["init", "--json"], schema: "init"),
        Step(args: ["backup", "--json", "{data}"], schema: "backup", env: ["COFFER_PROGRESS_FPS": "1000000"], statusLines: 1),
        Step(args: ["backup", "--json", "--dry-run", "{data}"], schema: "backup"),
        Step(args: ["backup", "--json", "--tag", "second", "{data}"], schema: "backup"),
        Step(args: ["snapshots", "--json"], schema: "snapshots"),
        Step(args: ["ls", "latest", "--json"], schema: "ls"),
        // (A restore this small may finish before its first progress event: status lines are not required.)
        Step(args: ["restore", "latest", "--target", "{root}/restored", "--json"], schema: "restore",
             env: ["COFFER_PROGRESS_FPS": "1000000"]),
        Step(args: ["find", "note.txt", "--json"], schema: "find"),
        Step(args: ["stats", "--json"], schema: "stats"),
        Step(args: ["init", "-r", "{root}/copy", "--json"], schema: "init"),
        Step(args: ["copy", "-r", "{root}/copy", "--from-repo", "{root}/repo", "--json"], schema: "copy",
             env: ["COFFER_PROGRESS_FPS": "1000000"], statusLines: 1),
        Step(args: ["check", "--json"], schema: "check"),
        Step(args: ["check", "--read-data", "--json"], schema: "check", env: ["COFFER_PROGRESS_FPS": "1000000"], statusLines: 1),
        Step(args: ["forget", "--keep-last", "1", "--dry-run", "--json"], schema: "forget"),
        Step(args: ["forget", "--keep-last", "1", "--prune", "--now", "--json"], schema: "forget"),
        Step(args: ["prune", "--now", "--json"], schema: "prune", env: ["COFFER_PROGRESS_FPS": "1000000"], statusLines: 1),
        Step(args: ["repair", "index", "--json"], schema: "repair-index"),
        Step(args: ["repair", "snapshots", "--dry-run", "--json"], schema: "repair-snapshots"),
        Step(args: ["key", "show", "--json"], schema: "key-show"),
        Step(args: ["key", "rotate", "--no-vault", "--json"], schema: "key-rotate", statusLines: 1),
        Step(args: ["snapshots", "--json"], schema: "snapshots"),
        // A failure: the error line on stderr (exit 10, repository not found).
        Step(args: ["snapshots", "--json", "-r", "{root}/nowhere"], schema: "snapshots", status: 10),
    ]

    /// The vault and realm commands, against a `coffer realm cluster` process (COFFER_VAULT,
    /// COFFER_USER and COFFER_PASSWORD set).
    static let vaultCommands: [Step] = [
        Step(args: ["init", "--password", "--json"], schema: "init"),
        Step(args: ["vault", "status", "--json"], schema: "vault-status"),
        Step(args: ["vault", "change-password", "--json"], schema: "vault-registration"),
        // An active registration is replaced only with --reset (a plain enable exits 26).
        Step(args: ["vault", "enable", "--reset", "--json"], schema: "vault-registration"),
        Step(args: ["vault", "recover", "--key-out", "{root}/recovered.key", "--json"], schema: "vault-recover"),
        Step(args: ["key", "rotate", "--json"], schema: "key-rotate"),
        Step(args: ["vault", "disable", "--json"], schema: "vault-disable"),
        Step(args: ["vault", "status", "--json"], schema: "vault-status"),
        // Not registered any more: the error line (exit 22).
        Step(args: ["vault", "recover", "--key-out", "{root}/again.key", "--json"], schema: "vault-recover", status: 22),
        Step(args: ["realm", "init", "--dir", "{root}/realm-x", "--x", "7", "--json"], schema: "realm-init"),
        Step(args: ["realm", "add-tenant", "--dir", "{root}/realm-x", "--id", "acme", "--key", "{root}/tenant.pub.pem", "--json"],
             schema: "realm-add-tenant"),
        Step(args: ["realm", "rotate-key", "--dir", "{root}/realm-x", "--json"], schema: "realm-rotate-key"),
    ]

    /// Runs the steps in one sandbox and checks every line; returns the problems found.
    static func check(_ steps: [Step], in box: Sandbox, env: [String: String] = [:]) async throws -> [String] {
        var problems: [String] = []
        for step in steps {
            let args = step.args.map {
                $0.replacingOccurrences(of: "{data}", with: box.path("data").path)
                    .replacingOccurrences(of: "{root}", with: box.root.path)
            }
            let r = try await box.run(args, env: env.merging(step.env) { $1 })
            let name = "coffer " + step.args.joined(separator: " ")
            guard r.status == step.status, !r.signalled else {
                problems.append("\(name): exit \(r.status), expected \(step.status)\n\(r)")
                continue
            }
            let out = r.stdout.split(separator: "\n").map(String.init)
            if step.status == 0 {
                await problems += try JSONSchemaCheck.problems(lines: out, schema: step.schema).map { "\(name): \($0)" }
                let statuses = out.filter { $0.contains(#""message_type":"status""#) }.count
                if statuses < step.statusLines { problems.append("\(name): \(statuses) status lines, expected at least \(step.statusLines)\n\(r)") }
                if step.statusLines > 0, !(out.last ?? "").contains(#""message_type":"summary""#) {
                    problems.append("\(name): the last line is not the summary\n\(r)")
                }
            } else {
                // Nothing on stdout; the last line on stderr is the error, with the exit code.
                if !out.isEmpty { problems.append("\(name): printed on stdout although it failed: \(r.stdout)") }
                let last = String(r.stderr.split(separator: "\n").last ?? "")
                await problems += try JSONSchemaCheck.problems(lines: [last], schema: "error").map { "\(name) (stderr): \($0)" }
                if !last.contains(#""code":\#(step.status)"#) { problems.append("\(name): the error line lacks the exit code: \(last)") }
            }
        }
        return problems
    }

    static func makeData(_ box: Sandbox) throws {
        let data = box.path("data")
        try FileManager.default.createDirectory(at: data.appendingPathComponent("docs"), withIntermediateDirectories: true)
        for i in 0..<20 {
            try Data(repeating: UInt8(i), count: 20_000 + i).write(to: data.appendingPathComponent("docs/file\(i).bin"))
        }
        try "hello\n".write(to: data.appendingPathComponent("note.txt"), atomically: true, encoding: .utf8)
        try FileManager.default.createSymbolicLink(atPath: data.appendingPathComponent("link").path, withDestinationPath: "note.txt")
    }

    @Test("every repository command's --json output matches its schema, status lines and the error line included")
    func repositoryCommandsMatchSchemas() async throws {
        let box = try Sandbox()
        try Self.makeData(box)
        let problems = try await Self.check(Self.repositoryCommands, in: box)
        #expect(problems.isEmpty, "\(problems.joined(separator: "\n"))")
    }

    @Test("every vault and realm command's --json output matches its schema")
    func vaultCommandsMatchSchemas() async throws {
        let box = try Sandbox()
        try Self.makeData(box)
        let cluster = try RealmClusterProcess(in: box.path("cluster"))
        defer { cluster.stop() }
        // A tenant public key for `realm add-tenant`.
        let priv = box.path("tenant.pem").path, pub = box.path("tenant.pub.pem").path
        let openssl = try #require(which("openssl"), "openssl makes the tenant key")
        _ = try await runProcess(openssl, ["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", priv])
        _ = try await runProcess(openssl, ["ec", "-in", priv, "-pubout", "-out", pub])
        let env = ["COFFER_VAULT": cluster.vaultConfig.path, "COFFER_USER": "dana@example.com", "COFFER_PASSWORD": "correct horse 7",
                   "COFFER_CURRENT_PASSWORD": "correct horse 7"]
        let problems = try await Self.check(Self.vaultCommands, in: box, env: env)
        #expect(problems.isEmpty, "\(problems.joined(separator: "\n"))")
    }

    @Test("the schemas are strict: a renamed or camelCase field fails validation")
    func schemasRejectRenamedFields() async throws {
        let box = try Sandbox()
        try Self.makeData(box)
        try await box.ok(["init"])
        let line = try #require(try await box.ok(["backup", "--json", box.path("data").path]).stdout.split(separator: "\n").last.map(String.init))
        await #expect(try JSONSchemaCheck.problems(lines: [line], schema: "backup").isEmpty)
        let renamed = line.replacingOccurrences(of: #""snapshot_id""#, with: #""snapshotID""#)
        #expect(renamed != line)
        await #expect(!(try JSONSchemaCheck.problems(lines: [renamed], schema: "backup")).isEmpty, "snapshotID must not validate")
        let extra = line.replacingOccurrences(of: #""partial""#, with: #""unknown_field":1,"partial""#)
        await #expect(!(try JSONSchemaCheck.problems(lines: [extra], schema: "backup")).isEmpty, "an unknown field must not validate")
    }
}
