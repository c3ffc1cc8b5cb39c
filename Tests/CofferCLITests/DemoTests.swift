import Foundation
import Testing

/// `coffer demo` is the README's first command: it must run end to end and pass every one of its
/// own checks (which compare restored files and messages with the originals, search the storage for
/// plaintext, and exhaust a throwaway account's guesses).
@Suite struct DemoTests {
    @Test func demoRunsEveryStepAndKeepsItsFolders() async throws {
        let sandbox = try Sandbox()
        let kept = sandbox.path("kept")
        let r = try await sandbox.run(["demo", "--keep", kept.path, "--messages", "2000"])
        #expect(r.status == 0 && !r.signalled, "\(r)")
        for step in 1...8 {
            #expect(r.stdout.contains("[\(step)/8]"), "step \(step) missing from the narration")
        }
        #expect(r.stdout.contains("Every check passed"))
        #expect(!r.stdout.contains("✗"))
        // The folders are kept for inspection: the cloud folder holds only hash-named objects.
        let fm = FileManager.default
        #expect(fm.fileExists(atPath: kept.appendingPathComponent("phone/Databases/msgstore.db").path))
        #expect(fm.fileExists(atPath: kept.appendingPathComponent("realms/vault.json").path))
        let cloudNames = try fm.subpathsOfDirectory(atPath: kept.appendingPathComponent("cloud").path)
        #expect(!cloudNames.isEmpty)
        for name in cloudNames {
            #expect(!name.contains("msgstore") && !name.contains("IMG"), "storage object name \(name) leaks a file name")
        }
    }

    @Test func demoRefusesANonEmptyKeepFolder() async throws {
        let sandbox = try Sandbox()
        let kept = sandbox.path("busy")
        try FileManager.default.createDirectory(at: kept, withIntermediateDirectories: true)
        try Data("x".utf8).write(to: kept.appendingPathComponent("something"))
        let r = try await sandbox.run(["demo", "--keep", kept.path])
        #expect(r.status != 0)
        #expect(r.stderr.contains("not empty"), "\(r)")
        #expect(FileManager.default.fileExists(atPath: kept.appendingPathComponent("something").path))
    }
}
