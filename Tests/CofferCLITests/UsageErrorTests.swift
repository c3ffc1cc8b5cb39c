import Foundation
import Testing

/// Usage errors found by the argument parser read like every other error: `coffer: ...`, exit 64,
/// and with `--json` the error line.
@Suite("usage errors: one prefix and exit code")
struct UsageErrorTests {
    @Test("a missing argument, an unknown option and an unknown command: `coffer:` prefix, usage lines, exit 64")
    func textForm() async throws {
        let box = try Sandbox()
        for args in [["restore"], ["snapshots", "--no-such-option"], ["no-such-command"]] {
            let r = try await box.run(args)
            #expect(r.status == 64 && !r.signalled, "\(args): \(r)")
            #expect(r.stderr.hasPrefix("coffer: "), "\(args): \(r.stderr)")
            #expect(!r.stderr.contains("Error: "), "\(args): \(r.stderr)")
            #expect(r.stdout.isEmpty, "\(args): \(r)")
        }
        #expect(try await box.run(["restore"]).stderr.contains("Usage: coffer restore"))
        // Help and --version still print on stdout and succeed.
        let help = try await box.run(["restore", "--help"])
        #expect(help.status == 0 && help.stdout.contains("USAGE: coffer restore"), "\(help)")
        let version = try await box.run(["--version"])
        #expect(version.status == 0 && version.stdout.hasPrefix("coffer "), "\(version)")
    }

    @Test("with --json a usage error is the error line on stderr with code 64")
    func jsonForm() async throws {
        let box = try Sandbox()
        let r = try await box.run(["restore", "--json"])
        #expect(r.status == 64, "\(r)")
        let last = String(r.stderr.split(separator: "\n").last ?? "")
        let obj = try #require(try JSONSerialization.jsonObject(with: Data(last.utf8)) as? [String: Any], "\(r.stderr)")
        #expect(obj["message_type"] as? String == "error" && obj["code"] as? Int == 64, "\(obj)")
        await #expect(try JSONSchemaCheck.problems(lines: [last], schema: "error").isEmpty)
    }
}
