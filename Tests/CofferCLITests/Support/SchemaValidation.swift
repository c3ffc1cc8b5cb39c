import Foundation
import Testing

/// Validates a command's `--json` output against its committed schema (docs/schemas/NAME.json,
/// JSON Schema draft 2020-12) with python3's jsonschema, so the documentation cannot drift from the
/// output: a field added, renamed or of another type fails here.
enum SchemaValidation {
    static let script = """
        import json, sys
        import jsonschema
        schema = json.load(open(sys.argv[1]))
        jsonschema.Draft202012Validator.check_schema(schema)
        doc = json.load(open(sys.argv[2]))
        errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
        for e in errors:
            print("/".join(str(p) for p in e.path) or "(root)", ":", e.message)
        sys.exit(1 if errors else 0)
        """

    static func schemaURL(_ name: String) -> URL {
        packageRoot.appendingPathComponent("docs/schemas/\(name).json")
    }

    /// Records an issue for every way `json` does not match docs/schemas/`name`.json.
    static func expectValid(_ json: String, schema name: String, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let python = try #require(which("python3"), "python3 (with jsonschema) is needed to validate --json output")
        let doc = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-json-\(UUID().uuidString).json")
        try Data(json.utf8).write(to: doc)
        defer { try? FileManager.default.removeItem(at: doc) }
        let r = try await runProcess(python, ["-c", script, schemaURL(name).path, doc.path])
        #expect(r.status == 0, "--json output does not match docs/schemas/\(name).json:\n\(r.stdout)\(r.stderr)\n--- output\n\(json)",
                sourceLocation: sourceLocation)
    }
}
