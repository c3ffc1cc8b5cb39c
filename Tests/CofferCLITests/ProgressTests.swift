import Foundation
import Testing

/// Progress when stderr is not a terminal (here a file): plain lines at COFFER_PROGRESS_FPS, none
/// with --no-progress, and nothing but errors with -q.
@Suite("progress on a non-terminal stderr")
struct ProgressTests {
    /// "[0:00] 45%  3/20 files  ..." as the progress line starts.
    static func progressLines(_ stderr: String) -> [Substring] {
        stderr.split(separator: "\n").filter { $0.hasPrefix("[") && $0.contains("% ") && $0.contains(" files  ") }
    }

    static func sandbox() async throws -> Sandbox {
        let box = try Sandbox()
        let data = box.path("data")
        try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true)
        for i in 0..<30 { try Data(repeating: UInt8(i), count: 40_000).write(to: data.appendingPathComponent("f\(i)")) }
        try await box.ok(["init"])
        return box
    }

    @Test("a high COFFER_PROGRESS_FPS gives plain progress lines on stderr, without terminal control characters")
    func plainLinesAtTheRate() async throws {
        let box = try await Self.sandbox()
        let fast = ["COFFER_PROGRESS_FPS": "1000000"]
        let r = try await box.ok(["backup", box.path("data").path], env: fast)
        let lines = Self.progressLines(r.stderr)
        #expect(!lines.isEmpty, "no progress lines:\n\(r)")
        #expect(!r.stderr.contains("\r") && !r.stderr.contains("\u{1B}"), "control characters in a file:\n\(r.stderr)")
        #expect(r.stdout.contains("snapshot "), "the summary is still printed:\n\(r)")
    }

    @Test("--no-progress prints no progress lines; -q prints neither progress nor summary")
    func noProgressAndQuiet() async throws {
        let box = try await Self.sandbox()
        let fast = ["COFFER_PROGRESS_FPS": "1000000"]
        let r = try await box.ok(["backup", "--no-progress", box.path("data").path], env: fast)
        #expect(Self.progressLines(r.stderr).isEmpty, "\(r)")
        #expect(r.stdout.contains("snapshot "), "\(r)")
        try Data("changed".utf8).write(to: box.path("data/f1"))
        let q = try await box.ok(["backup", "-q", box.path("data").path], env: fast)
        #expect(q.stdout.isEmpty && q.stderr.isEmpty, "-q printed something:\n\(q)")
        let rq = try await box.ok(["restore", "latest", "-q", "--target", box.path("out").path], env: fast)
        #expect(rq.stdout.isEmpty && rq.stderr.isEmpty, "-q printed something:\n\(rq)")
        // With --json, -q keeps the summary line and leaves out the status lines.
        let j = try await box.ok(["backup", "--json", "-q", box.path("data").path], env: fast)
        #expect(j.stdout.split(separator: "\n").count == 1 && j.stdout.contains(#""message_type":"summary""#), "\(j)")
    }

    @Test("check --read-data, prune, copy and key rotate print plain progress lines on a non-terminal stderr, with what they count")
    func longRepositoryJobsReportProgress() async throws {
        let box = try await Self.sandbox()
        let fast = ["COFFER_PROGRESS_FPS": "1000000"]
        try await box.ok(["backup", "-q", box.path("data").path])
        // Every file changes, so that once the first snapshot is forgotten its packs are unused: prune deletes them.
        for i in 0..<30 { try Data(repeating: UInt8(100 + i), count: 40_000).write(to: box.path("data/f\(i)")) }
        try await box.ok(["backup", "-q", box.path("data").path])
        func lines(_ r: RunResult, _ unit: String) -> [Substring] {
            r.stderr.split(separator: "\n").filter { $0.hasPrefix("[") && $0.contains("% ") && $0.contains(" \(unit)  ") }
        }
        let check = try await box.ok(["check", "--read-data"], env: fast)
        #expect(lines(check, "packs").contains { $0.contains("reading packs") }, "\(check)")
        #expect(!check.stderr.contains("\r") && !check.stderr.contains("\u{1B}"), "control characters in a file:\n\(check.stderr)")
        #expect(check.stdout.contains("checked "), "the report still follows:\n\(check)")
        #expect(lines(try await box.ok(["check", "--read-data", "--no-progress"], env: fast), "packs").isEmpty)

        try await box.ok(["init", "-r", box.path("copy").path])
        let copy = try await box.ok(["copy", "-r", box.path("copy").path, "--from-repo", box.repo.path], env: fast)
        #expect(lines(copy, "blobs").contains { $0.contains("snapshot ") }, "\(copy)")
        #expect(copy.stdout.contains("2 snapshots copied"), "\(copy)")

        try await box.ok(["forget", "--keep-last", "1"])
        let prune = try await box.ok(["prune", "--now"], env: fast)
        #expect(!lines(prune, "snapshots").isEmpty, "the tree-reading step:\n\(prune)")
        #expect(lines(prune, "objects").contains { $0.contains("deleting") }, "the deletions:\n\(prune)")
        #expect(prune.stdout.contains("prune: "), "\(prune)")

        // Key rotation re-encrypts every blob of the live snapshots: counted in blobs, with the step.
        let rotate = try await box.ok(["key", "rotate", "--no-vault"], env: fast)
        #expect(lines(rotate, "blobs").contains { $0.contains("re-encrypting") }, "\(rotate)")
        #expect(!rotate.stderr.contains("\r") && !rotate.stderr.contains("\u{1B}"), "\(rotate.stderr)")
    }
}
