import CofferTesting
import Foundation
import Testing

/// `Examples/CofferExample` is a package of its own that depends on this one by path and links the
/// CofferKit product only, as an app would. This test builds it with `swift build`, as its
/// developer would, and runs it against five real realms on loopback (`withRealmCluster`) with a
/// real folder repository: it creates the repository with a password in the vault, backs up a
/// folder, recovers the key on a new device's home and restores; the restored files must be
/// identical to the originals.
///
/// Why it takes long: a second package is a second build of everything CofferKit links (Coffer's
/// engine and vault client, swift-crypto, swift-nio, async-http-client, GRDB, jwt-kit), several
/// minutes on 2 cores the first time. Its scratch folder is `.build/examples` (ignored by git and
/// reused), so later runs only rebuild what changed: seconds. scripts/test runs it alone, after
/// the other groups, so that the compiler does not starve the realm servers other suites run
/// in-process.
@Suite("Examples/CofferExample: built and run as an app embeds Coffer", .serialized)
struct ExamplePackageTests {
    /// This package's root: three folders above this file (`Tests/CofferKitTests/`).
    static let packageRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let example = packageRoot.appendingPathComponent("Examples/CofferExample")
    static let scratch = packageRoot.appendingPathComponent(".build/examples")

    struct Finished {
        var status: Int32
        var output: String
    }

    /// Runs `arguments` (the first is looked up on PATH) to completion with `input` on standard
    /// input, both outputs in one file; waits without holding a thread of the cooperative pool (the
    /// realms that the example talks to serve on that pool in this process).
    static func run(_ arguments: [String], input: String = "", in folder: URL) async throws -> Finished {
        let log = folder.appendingPathComponent("output-\(UUID().uuidString).log")
        let stdin = folder.appendingPathComponent("input-\(UUID().uuidString)")
        try Data(input.utf8).write(to: stdin)
        FileManager.default.createFile(atPath: log.path, contents: nil)
        let out = try FileHandle(forWritingTo: log)
        let inp = try FileHandle(forReadingFrom: stdin)
        defer {
            try? out.close()
            try? inp.close()
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = arguments
        p.standardInput = inp
        p.standardOutput = out
        p.standardError = out
        let status = try await withCheckedThrowingContinuation { (done: CheckedContinuation<Int32, any Error>) in
            p.terminationHandler = { done.resume(returning: $0.terminationStatus) }
            do { try p.run() } catch {
                p.terminationHandler = nil
                done.resume(throwing: error)
            }
        }
        return Finished(status: status, output: (try? String(contentsOf: log, encoding: .utf8)) ?? "")
    }

    @Test("builds with swift build (minutes the first time: see the suite's comment), backs up and restores identically")
    func buildsAndRestoresIdentically() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-example-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)

        print("ExamplePackageTests: swift build --package-path Examples/CofferExample --scratch-path .build/examples: "
              + "a second build of CofferKit and its dependencies, several minutes the first time on 2 cores, seconds after")
        let build = try await Self.run(["swift", "build", "--package-path", Self.example.path, "--scratch-path", Self.scratch.path,
                                        "--product", "coffer-example"], in: root)
        try #require(build.status == 0, "swift build of Examples/CofferExample failed (exit \(build.status)):\n\(build.output)")
        let binary = Self.scratch.appendingPathComponent("debug/coffer-example")
        try #require(FileManager.default.isExecutableFile(atPath: binary.path), "the build made no \(binary.path)")

        // A real folder: nested directories, an empty file, 1 MiB that is not compressible, text.
        let chats = root.appendingPathComponent("Chats")
        try FileManager.default.createDirectory(at: chats.appendingPathComponent("Media/2026"), withIntermediateDirectories: true)
        try Data("see you tomorrow\n".utf8).write(to: chats.appendingPathComponent("chat-1.txt"))
        try Data().write(to: chats.appendingPathComponent("empty"))
        var generator = SystemRandomNumberGenerator()
        try Data((0..<(1 << 20)).map { _ in UInt8.random(in: 0...255, using: &generator) })
            .write(to: chats.appendingPathComponent("Media/2026/photo.jpg"))
        try Data(String(repeating: "a message worth keeping\n", count: 5_000).utf8)
            .write(to: chats.appendingPathComponent("Media/log.txt"))

        let work = root.appendingPathComponent("app")
        let ran = try await withRealmCluster { cluster in
            try await Self.run([binary.path, "--vault", cluster.vaultConfigurationURL.path, "--user", "alice",
                                "--repository", root.appendingPathComponent("repo").path, "--work", work.path, chats.path],
                               input: "correct horse\n", in: root)
        }
        try #require(ran.status == 0, "coffer-example failed (exit \(ran.status)):\n\(ran.output)")

        let restored = work.appendingPathComponent("restored/Chats")
        try #require(FileManager.default.fileExists(atPath: restored.path), "nothing restored at \(restored.path):\n\(ran.output)")
        #expect(try BackupsTests.files(restored) == BackupsTests.files(chats), "restored files differ from the originals")
        #expect(FileManager.default.fileExists(atPath: restored.appendingPathComponent("empty").path))
        // What the app showed: the events of `Backups` and the progress, as LIBRARY.md's flow prints them.
        for line in ["Vault: 5 realms, any 3 recover the key",
                     "your 64-digit backup key",
                     "the vault knows no backup of this repository yet",
                     "'s head anchored at ",
                     "% backed up (",
                     "the vault's latest backup of this repository is from",
                     "restoring 4 files",
                     "restored 4 files"] {
            #expect(ran.output.contains(line), "missing from the example's output: \(line)\n\(ran.output)")
        }
    }

    @Test("the example refuses a wrong command line with its usage (exit 2), before touching anything")
    func usage() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-example-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        let build = try await Self.run(["swift", "build", "--package-path", Self.example.path, "--scratch-path", Self.scratch.path,
                                        "--product", "coffer-example"], in: root)
        try #require(build.status == 0, "swift build of Examples/CofferExample failed (exit \(build.status)):\n\(build.output)")
        let r = try await Self.run([Self.scratch.appendingPathComponent("debug/coffer-example").path, "--user", "alice"], in: root)
        #expect(r.status == 2 && r.output.contains("--vault is required") && r.output.contains("usage: coffer-example"), "\(r.output)")
    }
}
