import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Validates `--json` output against the JSON Schemas in docs/schemas/ with the real validator
/// (python3's `jsonschema`, draft 2020-12; scripts/test installs it).
enum JSONSchemaCheck {
    static let schemaDirectory = packageRoot.appendingPathComponent("docs/schemas")

    /// Checks every line: a line whose `message_type` is `status` against status.json, `error`
    /// against error.json, any other against `schema` (a file name in docs/schemas without
    /// `.json`). Returns one message per problem; empty when every line is valid.
    static func problems(lines: [String], schema: String) async throws -> [String] {
        let input = try JSONSerialization.data(withJSONObject: [
            "dir": schemaDirectory.path, "schema": schema, "lines": lines,
        ])
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-schema-\(UUID().uuidString).json")
        try input.write(to: tmp)
        defer { try? FileManager.default.removeItem(at: tmp) }
        let r = try await runProcess("/usr/bin/env", ["python3", "-c", script, tmp.path])
        guard r.status == 0 else { return ["the validator failed: \(r.stderr)"] }
        return r.stdout.split(separator: "\n").map(String.init)
    }

    /// Reads {dir, schema, lines}; prints one line per problem.
    private static let script = #"""
    import json, sys
    from jsonschema import Draft202012Validator
    job = json.load(open(sys.argv[1]))
    cache = {}
    def validator(name):
        if name not in cache:
            schema = json.load(open(job["dir"] + "/" + name + ".json"))
            Draft202012Validator.check_schema(schema)
            cache[name] = Draft202012Validator(schema)
        return cache[name]
    if not job["lines"]:
        print("no output to check")
    for i, line in enumerate(job["lines"]):
        try:
            value = json.loads(line)
        except ValueError as e:
            print("line %d is not JSON (%s): %s" % (i + 1, e, line[:200]))
            continue
        name = job["schema"]
        if isinstance(value, dict) and value.get("message_type") in ("status", "error"):
            name = value["message_type"]
        for e in validator(name).iter_errors(value):
            where = "/".join(str(p) for p in e.absolute_path)
            print("line %d (%s.json) at /%s: %s" % (i + 1, name, where, e.message))
    """#
}

/// `coffer realm cluster` as a real process: N realms on loopback and D/vault.json, until stopped.
final class RealmClusterProcess: @unchecked Sendable {
    let directory: URL
    let process = Process()
    private let output: URL

    var vaultConfig: URL { directory.appendingPathComponent("vault.json") }

    init(in directory: URL, count: Int = 3) throws {
        self.directory = directory
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        output = directory.appendingPathComponent("cluster.out")
        _ = FileManager.default.createFile(atPath: output.path, contents: nil)
        let out = try FileHandle(forWritingTo: output)
        process.executableURL = cofferBinary
        process.arguments = ["realm", "cluster", "--dir", directory.path, "--count", "\(count)", "--base-port", "0"]
        process.standardOutput = out
        process.standardError = out
        process.standardInput = FileHandle.nullDevice
        try process.run()
        // Ready once it says so (it prints the line after every realm listens); the limit only
        // ends a test whose cluster never starts.
        let deadline = Date().addingTimeInterval(120)
        while !((try? String(contentsOf: output, encoding: .utf8)) ?? "").contains("Serving until interrupted") {
            guard process.isRunning, Date() < deadline else {
                throw RunFailed(args: process.arguments ?? [], result: RunResult(
                    status: -1, stdout: (try? String(contentsOf: output, encoding: .utf8)) ?? "", stderr: "", signalled: false))
            }
            usleep(20_000)
        }
    }

    func stop() {
        if process.isRunning {
            kill(process.processIdentifier, SIGTERM)
            process.waitUntilExit()
        }
    }

    deinit { stop() }
}
