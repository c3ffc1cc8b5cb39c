import Foundation
import Testing

/// Shortcuts for the commands most tests run.
extension Sandbox {
    /// `coffer init`; returns the 64 digits it printed (without spaces).
    @discardableResult
    func initRepository(_ extra: [String] = [], env: [String: String] = [:]) async throws -> String {
        let r = try await ok(["init"] + extra, env: env)
        return try #require(Self.digits(in: r.stdout), "init printed no 64-digit key:\n\(r)")
    }

    /// The first run of 16 groups of 4 hex digits in `text`, as 64 digits.
    static func digits(in text: String) -> String? {
        for line in text.split(separator: "\n") {
            let groups = line.split(separator: " ")
            if groups.count == 16, groups.allSatisfy({ $0.count == 4 && $0.allSatisfy(\.isHexDigit) }) {
                return groups.joined()
            }
        }
        return nil
    }

    /// `coffer backup --json PATHS` with the given allowed exit statuses; returns the summary.
    @discardableResult
    func backupJSON(_ paths: [String], extra: [String] = [], allow: Set<Int32> = [0], env: [String: String] = [:]) async throws -> [String: Any] {
        let r = try await run(["backup", "--json"] + extra + paths, env: env)
        guard allow.contains(r.status), !r.signalled else { throw RunFailed(args: ["backup"] + paths, result: r) }
        return try #require(try r.json() as? [String: Any], "backup --json did not print an object:\n\(r)")
    }

    /// Snapshot ids, oldest first.
    func snapshotIDs() async throws -> [String] {
        let r = try await ok(["snapshots", "--json"])
        let list = try #require(try r.json() as? [[String: Any]])
        return list.compactMap { $0["id"] as? String }
    }

    /// Restores `snapshot` into a fresh folder and returns that folder.
    func restore(_ snapshot: String, into name: String, extra: [String] = []) async throws -> URL {
        let target = path(name)
        try? FileManager.default.removeItem(at: target)
        try await ok(["restore", snapshot, "--target", target.path] + extra)
        return target
    }

    /// Object files of the repository by kind (`data`, `index`, `snapshots`, ...), relative names.
    func objects(_ kind: String, in repo: URL? = nil) -> [String] {
        let base = (repo ?? self.repo).appendingPathComponent(kind)
        guard let e = FileManager.default.enumerator(atPath: base.path) else { return [] }
        var out: [String] = []
        for case let rel as String in e {
            var isDir: ObjCBool = false
            if FileManager.default.fileExists(atPath: base.appendingPathComponent(rel).path, isDirectory: &isDir), !isDir.boolValue,
               !rel.split(separator: "/").last!.hasPrefix(".") {
                out.append("\(kind)/\(rel)")
            }
        }
        return out.sorted()
    }
}

/// Asserts that `restored` holds nothing that differs from `original`: every restored file has
/// exactly the original's bytes (missing files are allowed: a damaged object may stop them).
func expectNoWrongData(original: URL, restored: URL, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let a = try TreeCompare.read(original)
    let b = try TreeCompare.read(restored)
    for (path, entry) in b {
        guard case .file(let data) = entry.kind else { continue }
        if path.split(separator: "/").last!.hasPrefix(".") { 
            Issue.record("restore left a hidden (temporary?) file \(path)", sourceLocation: sourceLocation)
            continue
        }
        guard let orig = a[path], case .file(let want) = orig.kind else {
            Issue.record("restore wrote \(path), which is not in the original", sourceLocation: sourceLocation)
            continue
        }
        #expect(data == want, "restored \(path) has wrong content", sourceLocation: sourceLocation)
    }
}
