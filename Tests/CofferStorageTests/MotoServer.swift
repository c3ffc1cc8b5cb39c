import AsyncHTTPClient
@testable import CofferS3
import CofferStorage
import Foundation
import NIOCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A real moto S3 server on loopback with IAM signature checking on, started and stopped by the
/// test. `INITIAL_NO_AUTH_ACTION_COUNT=3` lets exactly three unauthenticated calls through (create
/// a user, give it a policy, make it an access key); from then on every request must carry a valid
/// SigV4 signature of that key.
final class MotoServer: @unchecked Sendable {
    let process: Process
    let port: Int
    let logPath: String
    let credentials: AWSCredentials
    var endpoint: String { "http://127.0.0.1:\(port)" }

    /// Runs moto_server's entry point with two additions:
    /// - a watchdog thread that exits when the test process is gone (crash, kill -9), so no server
    ///   outlives its test;
    /// - a fix to moto's signature check: moto (5.x) recomputes the signature over the query string
    ///   after URL-decoding it, so any request whose query holds a `/` (ListObjectsV2 with
    ///   `prefix=repo/`) fails with SignatureDoesNotMatch, from the aws CLI as from us. AWS signs the
    ///   query re-encoded (each name and value percent-encoded, `-_.~` kept); the patch does that.
    ///   Everything else (key lookup, signature comparison, IAM policy) is moto's own.
    static let launcher = #"""
    import os, sys, threading, time
    from urllib.parse import quote, unquote

    parent = int(os.environ.get("COFFER_TEST_PARENT_PID", "0"))
    def watchdog():
        while True:
            time.sleep(1)
            try:
                os.kill(parent, 0)
            except OSError:
                os._exit(0)
    if parent:
        threading.Thread(target=watchdog, daemon=True).start()

    try:
        import moto.iam.access_control as ac
        from moto.server import main
    except ImportError as error:
        sys.stderr.write("moto is not installed for %s (%s): pip install 'moto[server]'\n" % (sys.executable, error))
        sys.exit(3)
    original = ac.IAMRequestBase._create_aws_request
    def create_aws_request(self):
        path, sep, query = self._path.partition("?")
        if sep:
            pairs = []
            for pair in query.split("&"):
                k, eq, v = pair.partition("=")
                pairs.append(quote(unquote(k), safe="-_.~") + "=" + quote(unquote(v), safe="-_.~"))
            saved = self._path
            self._path = path + "?" + "&".join(pairs)
            try:
                return original(self)
            finally:
                self._path = saved
        return original(self)
    ac.IAMRequestBase._create_aws_request = create_aws_request

    sys.argv[0] = "moto_server"
    main(sys.argv[1:])
    """#

    /// The interpreter named on moto_server's first line, or `python3` (pyenv shims are scripts).
    static func pythonFor(_ executable: String) -> String {
        guard let data = FileManager.default.contents(atPath: executable),
              let first = String(decoding: data.prefix(200), as: UTF8.self).split(separator: "\n").first,
              first.hasPrefix("#!") else { return "python3" }
        let interpreter = first.dropFirst(2).trimmingCharacters(in: .whitespaces)
        if interpreter.hasSuffix("python") || interpreter.contains("/python3"), !interpreter.contains(" "),
           FileManager.default.isExecutableFile(atPath: interpreter) {
            return interpreter
        }
        return "python3"
    }

    struct NotInstalled: Error, CustomStringConvertible {
        var description: String {
            "moto_server is not on PATH: these tests need a real S3-compatible server. Install it with `pip install 'moto[server]'` (CI does this in .ci/run)."
        }
    }

    struct StartFailed: Error, CustomStringConvertible {
        var description: String
    }

    /// Starts moto, waits until it answers, and creates the IAM user whose key later requests use.
    static func start() async throws -> MotoServer {
        guard let executable = findExecutable("moto_server") else { throw NotInstalled() }
        var lastError: (any Error)?
        for _ in 0..<3 {  // a port picked free can be taken before moto binds it
            let port = try freePort()
            let logPath = NSTemporaryDirectory() + "coffer-moto-\(port).log"
            _ = FileManager.default.createFile(atPath: logPath, contents: nil)
            let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
            let launcherPath = NSTemporaryDirectory() + "coffer-moto-\(port).py"
            try launcher.write(toFile: launcherPath, atomically: true, encoding: .utf8)
            defer { try? FileManager.default.removeItem(atPath: launcherPath) }
            let p = Process()
            // The launcher runs moto with the Python that has it: moto_server's own interpreter.
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = [pythonFor(executable), launcherPath, "-H", "127.0.0.1", "-p", "\(port)"]
            var env = ProcessInfo.processInfo.environment
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = "3"
            env["AWS_ACCESS_KEY_ID"] = nil
            env["AWS_SECRET_ACCESS_KEY"] = nil
            env["COFFER_TEST_PARENT_PID"] = "\(getpid())"
            p.environment = env
            p.standardOutput = log
            p.standardError = log
            try p.run()
            do {
                try await waitForPort(port, process: p, seconds: 30)
                let credentials = try await bootstrapIAM(endpoint: "http://127.0.0.1:\(port)")
                return MotoServer(process: p, port: port, logPath: logPath, credentials: credentials)
            } catch {
                lastError = error
                stopProcess(p)
                let tail = (try? String(contentsOfFile: logPath, encoding: .utf8))?.suffix(2000) ?? ""
                lastError = StartFailed(description: "moto_server did not start on port \(port): \(error)\n\(tail)")
            }
        }
        throw lastError!
    }

    private init(process: Process, port: Int, logPath: String, credentials: AWSCredentials) {
        self.process = process
        self.port = port
        self.logPath = logPath
        self.credentials = credentials
    }

    func stop() {
        Self.stopProcess(process)
        try? FileManager.default.removeItem(atPath: logPath)
    }

    /// A configuration for `bucket` on this server, with small multipart sizes so the multipart
    /// path runs with test-sized objects.
    func configuration(bucket: String, prefix: String = "", credentials: AWSCredentials? = nil,
                       endpoint: String? = nil, options: S3Options? = nil) -> S3Configuration {
        var o = options ?? S3Options()
        if options == nil {
            o.multipartThreshold = 6 << 20
            o.partSize = 5 << 20
            o.maxAttempts = 4
            o.initialBackoff = .milliseconds(50)
        }
        return S3Configuration(bucket: bucket, prefix: prefix, endpoint: endpoint ?? self.endpoint, region: "us-east-1",
                               credentials: credentials ?? self.credentials, options: o)
    }

    static func stopProcess(_ p: Process) {
        guard p.isRunning else { return }
        kill(p.processIdentifier, SIGTERM)
        for _ in 0..<50 where p.isRunning { usleep(100_000) }
        if p.isRunning { kill(p.processIdentifier, SIGKILL) }
        p.waitUntilExit()
    }

    /// Runs `body` with a fresh server that is stopped afterwards, whatever happens.
    static func with<T>(_ body: (MotoServer) async throws -> T) async throws -> T {
        let moto = try await start()
        do {
            let result = try await body(moto)
            moto.stop()
            return result
        } catch {
            moto.stop()
            throw error
        }
    }

    // MARK: IAM bootstrap (signed with our own SigV4, service "iam")

    static func bootstrapIAM(endpoint: String) async throws -> AWSCredentials {
        let http = HTTPClient(eventLoopGroupProvider: .singleton)
        do {
            let result = try await bootstrapIAM(http: http, endpoint: endpoint)
            try await http.shutdown()
            return result
        } catch {
            try? await http.shutdown()
            throw error
        }
    }

    static func bootstrapIAM(http: HTTPClient, endpoint: String) async throws -> AWSCredentials {
        // Moto ignores the signature of these first three calls, but they are signed anyway.
        let bootstrap = AWSCredentials(accessKeyID: "AKIABOOTSTRAP0000000", secretAccessKey: "bootstrap")
        let policy = #"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#
        _ = try await iam(http, endpoint, bootstrap, ["Action": "CreateUser", "UserName": "coffer"])
        _ = try await iam(http, endpoint, bootstrap, ["Action": "PutUserPolicy", "UserName": "coffer",
                                                      "PolicyName": "s3-all", "PolicyDocument": policy])
        let key = try await iam(http, endpoint, bootstrap, ["Action": "CreateAccessKey", "UserName": "coffer"])
        let root = try XMLElement.parse(Array(key.utf8))
        guard let access = root.child("CreateAccessKeyResult")?.child("AccessKey"),
              let id = access["AccessKeyId"], let secret = access["SecretAccessKey"] else {
            throw StartFailed(description: "moto's CreateAccessKey answer had no key")
        }
        return AWSCredentials(accessKeyID: id, secretAccessKey: secret)
    }

    static func iam(_ http: HTTPClient, _ endpoint: String, _ credentials: AWSCredentials,
                    _ params: [String: String]) async throws -> String {
        var all = params
        all["Version"] = "2010-05-08"
        let body = all.sorted { $0.key < $1.key }
            .map { "\(SigV4Signer.uriEncode($0.key, encodeSlash: true))=\(SigV4Signer.uriEncode($0.value, encodeSlash: true))" }
            .joined(separator: "&")
        let host = EndpointParts(endpoint)!.hostHeader
        let hash = SigV4Signer.payloadHash(Data(body.utf8))
        let now = Date()
        let headers = [("host", host), ("x-amz-date", SigV4Signer.amzDate(now)),
                       ("content-type", "application/x-www-form-urlencoded; charset=utf-8")]
        let signer = SigV4Signer(credentials: credentials, region: "us-east-1", service: "iam")
        let sig = signer.sign(.init(method: "POST", encodedPath: "/", headers: headers, payloadHash: hash), date: now)
        var request = HTTPClientRequest(url: endpoint + "/")
        request.method = .POST
        for (k, v) in headers { request.headers.add(name: k, value: v) }
        request.headers.add(name: "authorization", value: sig.authorization)
        request.body = .bytes(ByteBuffer(string: body))
        let response = try await http.execute(request, timeout: .seconds(30))
        let text = String(buffer: try await response.body.collect(upTo: 1 << 20))
        guard response.status == .ok else {
            throw StartFailed(description: "IAM \(params["Action"]!) failed: HTTP \(response.status.code) \(text.prefix(300))")
        }
        return text
    }

    // MARK: Processes and ports

    static func findExecutable(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for dir in path.split(separator: ":") {
            let candidate = "\(dir)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    /// A loopback TCP port that was free a moment ago.
    static func freePort() throws -> Int {
        #if canImport(Glibc)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #else
        let fd = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        guard fd >= 0 else { throw StartFailed(description: "socket() failed") }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) }
        }
        guard bound == 0 else { throw StartFailed(description: "bind() failed") }
        let named = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        guard named == 0 else { throw StartFailed(description: "getsockname() failed") }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    static func canConnect(_ port: Int) -> Bool {
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

    static func waitForPort(_ port: Int, process: Process, seconds: Double) async throws {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if canConnect(port) { return }
            guard process.isRunning else { throw StartFailed(description: "the process exited with status \(process.terminationStatus)") }
            try await Task.sleep(for: .milliseconds(100))
        }
        // Once more after the deadline: this task may have been resumed late (a loaded machine),
        // and a server that listens by now did start.
        if canConnect(port) { return }
        throw StartFailed(description: "nothing listened on port \(port) after \(seconds) s")
    }
}
