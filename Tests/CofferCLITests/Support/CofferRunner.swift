import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Where the package lives: two folders above this file's folder (`Tests/CofferCLITests/Support`).
let packageRoot: URL = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().deletingLastPathComponent()

/// The real `coffer` binary that `swift build` produced.
let cofferBinary: URL = packageRoot.appendingPathComponent(".build/debug/coffer")

/// What a finished `coffer` run left behind.
struct RunResult: CustomStringConvertible {
    var status: Int32
    var stdout: String
    var stderr: String
    /// True when the process died from a signal (kill -9) rather than exiting.
    var signalled: Bool

    var description: String { "exit \(status)\(signalled ? " (signal)" : "")\n--- stdout\n\(stdout)\n--- stderr\n\(stderr)" }

    /// The last line of `--json` output (JSON Lines: status lines may come before the summary).
    func json() throws -> Any {
        try JSONSerialization.jsonObject(with: Data((stdout.split(separator: "\n").last ?? "").utf8))
    }

    /// Every line of `--json` output, parsed.
    func jsonLines() throws -> [Any] {
        try stdout.split(separator: "\n").map { try JSONSerialization.jsonObject(with: Data($0.utf8)) }
    }
}

struct BinaryMissing: Error, CustomStringConvertible {
    var description: String { "\(cofferBinary.path) does not exist: build it first with `swift build` (the CLI tests run the real binary)" }
}

/// A scratch world for one test: its own COFFER_HOME, a repository path, and a place for data.
final class Sandbox: @unchecked Sendable {
    let root: URL
    let home: URL
    let repo: URL
    var extraEnvironment: [String: String] = [:]

    init(_ name: String = #function) throws {
        guard FileManager.default.isExecutableFile(atPath: cofferBinary.path) else { throw BinaryMissing() }
        let safe = name.filter { $0.isLetter || $0.isNumber }
        root = FileManager.default.temporaryDirectory
            .appendingPathComponent("coffer-cli-\(safe)-\(UUID().uuidString.prefix(8))", isDirectory: true)
        home = root.appendingPathComponent("home", isDirectory: true)
        repo = root.appendingPathComponent("repo", isDirectory: true)
        try FileManager.default.createDirectory(at: home, withIntermediateDirectories: true)
    }

    deinit {
        // Make everything removable again (tests chmod files away), then remove.
        if let e = FileManager.default.enumerator(atPath: root.path) {
            for case let rel as String in e {
                chmod(root.appendingPathComponent(rel).path, 0o755)
            }
        }
        try? FileManager.default.removeItem(at: root)
    }

    func path(_ rel: String) -> URL { root.appendingPathComponent(rel) }

    var environment: [String: String] {
        var env = ProcessInfo.processInfo.environment
        env["COFFER_HOME"] = home.path
        env["COFFER_REPO"] = repo.path
        env.removeValue(forKey: "COFFER_KEY")
        env.removeValue(forKey: "COFFER_KEY_FILE")
        for (k, v) in extraEnvironment { env[k] = v }
        return env
    }

    /// Runs `coffer ARGS` to completion.
    @discardableResult
    func run(_ args: [String], env: [String: String] = [:], killAfter: Double? = nil, signal: Int32 = SIGKILL) async throws -> RunResult {
        try await runProcess(cofferBinary.path, args, env: environment.merging(env) { $1 }, killAfter: killAfter, signal: signal)
    }

    /// Runs `coffer ARGS` and requires exit status 0.
    @discardableResult
    func ok(_ args: [String], env: [String: String] = [:]) async throws -> RunResult {
        let r = try await run(args, env: env)
        if r.status != 0 || r.signalled {
            throw RunFailed(args: args, result: r)
        }
        return r
    }
}

struct RunFailed: Error, CustomStringConvertible {
    var args: [String]
    var result: RunResult
    var description: String { "coffer \(args.joined(separator: " ")) failed: \(result)" }
}

/// Runs a program with stdout/stderr captured to files (no pipe deadlocks on big output). With
/// `killAfter`, sends `signal` (default SIGKILL) after that many seconds if the process is still running.
/// The caller suspends until the program exits (no thread of the cooperative pool waits for it, so
/// tests that run programs do not starve the servers other tests run in this process).
func runProcess(_ executable: String, _ args: [String], env: [String: String]? = nil,
                killAfter: Double? = nil, signal: Int32 = SIGKILL, cwd: URL? = nil) async throws -> RunResult {
    let tmp = FileManager.default.temporaryDirectory
    let outURL = tmp.appendingPathComponent("coffer-out-\(UUID().uuidString)")
    let errURL = tmp.appendingPathComponent("coffer-err-\(UUID().uuidString)")
    _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
    _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
    defer {
        try? FileManager.default.removeItem(at: outURL)
        try? FileManager.default.removeItem(at: errURL)
    }
    let out = try FileHandle(forWritingTo: outURL)
    let err = try FileHandle(forWritingTo: errURL)
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = args
    if var env {
        // A generous wait for each vault realm unless the test sets one (see VaultCLITests).
        if env["COFFER_VAULT_TIMEOUT"] == nil { env["COFFER_VAULT_TIMEOUT"] = "60" }
        p.environment = env
    }
    if let cwd { p.currentDirectoryURL = cwd }
    p.standardOutput = out
    p.standardError = err
    p.standardInput = FileHandle.nullDevice
    let (exited, exit) = AsyncStream<Void>.makeStream()
    let done = ExitFlag()
    p.terminationHandler = { _ in
        done.set()
        exit.finish()
    }
    try p.run()
    let pid = p.processIdentifier
    await withTaskGroup(of: Void.self) { group in
        if let killAfter {
            group.addTask {
                try? await Task.sleep(for: .seconds(killAfter))
                if !Task.isCancelled, !done.isSet { kill(pid, signal) }
            }
        }
        for await _ in exited {}
        group.cancelAll()
    }
    p.waitUntilExit()  // returns at once: the termination handler ran
    try out.close()
    try err.close()
    return RunResult(
        status: p.terminationStatus,
        stdout: (try? String(contentsOf: outURL, encoding: .utf8)) ?? "",
        stderr: (try? String(contentsOf: errURL, encoding: .utf8)) ?? "",
        signalled: p.terminationReason == .uncaughtSignal)
}

final class ExitFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    func set() { flag.store(true, ordering: .sequentiallyConsistent) }
    var isSet: Bool { flag.load(ordering: .sequentiallyConsistent) }
}

/// Finds an executable on PATH.
func which(_ name: String) -> String? {
    for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
        let p = "\(dir)/\(name)"
        if FileManager.default.isExecutableFile(atPath: p) { return p }
    }
    return nil
}
