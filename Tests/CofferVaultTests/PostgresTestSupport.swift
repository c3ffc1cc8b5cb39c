import CofferRealm
import Foundation
import Testing

/// A real PostgreSQL 15 server for the tests, started from the Debian binaries (initdb, pg_ctl) on a
/// free loopback port in a temporary folder, and always stopped: ``withPostgres(_:)`` is a scope.
/// postgres refuses to run as root, so as root (the test machines) it runs as the `postgres` user
/// (setpriv). `COFFER_PG_BIN` overrides the binaries' folder.
enum PostgresTestServer {
    static func binDir() throws -> URL {
        var candidates: [String] = []
        if let env = ProcessInfo.processInfo.environment["COFFER_PG_BIN"] { candidates.append(env) }
        candidates += ["/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/17/bin",
                       "/opt/homebrew/opt/postgresql@15/bin", "/usr/local/opt/postgresql@15/bin"]
        guard let dir = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0 + "/postgres") }) else {
            throw TestFailure("no PostgreSQL server binaries (looked in \(candidates)); install postgresql-15 (scripts/test does) or set COFFER_PG_BIN")
        }
        return URL(fileURLWithPath: dir)
    }

    static var isRoot: Bool { getuid() == 0 }

    #if !canImport(Darwin)
    /// glibc's `posix_spawn_file_actions_addclosefrom_np` (2.34+), which Swift's Glibc module does
    /// not declare: looked up at run time.
    private typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>?, Int32) -> Int32
    private static let addCloseFrom: AddCloseFrom? = {
        guard let symbol = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np") else { return nil }
        return unsafeBitCast(symbol, to: AddCloseFrom.self)
    }()
    #endif

    /// Runs a PostgreSQL program (as `postgres` when we are root) in `dir`; throws with its output on
    /// failure. Through /bin/sh and posix_spawn + waitpid rather than Foundation's Process, whose
    /// wait never returned for pg_ctl here (the server it starts outlives it).
    @discardableResult
    static func run(_ program: URL, _ args: [String], in dir: URL) throws -> String {
        func q(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'" }
        let outFile = dir.appendingPathComponent("out-\(UUID().uuidString.prefix(8))")
        let command = ([program.path] + args).map(q).joined(separator: " ")
        let prefix = isRoot ? "/usr/bin/setpriv --reuid=postgres --regid=postgres --init-groups " : ""
        let script = "cd \(q(dir.path)) && \(prefix)\(command) > \(q(outFile.path)) 2>&1 < /dev/null"
        var pid: pid_t = 0
        let argv: [UnsafeMutablePointer<CChar>?] = ["/bin/sh", "-c", script].map { (s: String) in strdup(s) } + [nil]
        defer { argv.forEach { free($0) } }
        #if os(Linux)
        let env = environ
        #else
        let env = _NSGetEnviron().pointee
        #endif
        // The child must not inherit this process's descriptors: PostgreSQL keeps whatever it
        // inherits open for its lifetime, and a realm's listening socket held by a postgres process
        // made that realm's port unusable for a restart ("address already in use").
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        #if canImport(Darwin)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_CLOEXEC_DEFAULT))
        #else
        guard let closeFrom = Self.addCloseFrom, closeFrom(&actions, 3) == 0 else {
            throw TestFailure("posix_spawn_file_actions_addclosefrom_np is missing (glibc 2.34 or later is needed)")
        }
        #endif
        let rc = posix_spawn(&pid, "/bin/sh", &actions, &attributes, argv, env)
        guard rc == 0 else { throw TestFailure("could not start /bin/sh for \(program.lastPathComponent): errno \(rc)") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
        let text = (try? String(contentsOf: outFile, encoding: .utf8)) ?? ""
        try? FileManager.default.removeItem(at: outFile)
        let exited = (status & 0x7f) == 0
        let code = (status >> 8) & 0xff
        guard exited && code == 0 else {
            throw TestFailure("\(program.lastPathComponent) \(args.joined(separator: " ")) failed (status \(status)): \(text)")
        }
        return text
    }

    /// A free TCP port on 127.0.0.1 (bound, read, closed: the server binds it right after; a clash retries).
    static func freePort() -> Int {
        #if os(Linux)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #else
        let fd = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    /// A folder the server's user owns.
    static func makeFolder(_ name: String) throws -> URL {
        let dir = URL(fileURLWithPath: "/tmp").appendingPathComponent("coffer-pg-\(name)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        if isRoot { try FileManager.default.setAttributes([.ownerAccountName: "postgres", .groupOwnerAccountName: "postgres"], ofItemAtPath: dir.path) }
        return dir
    }

    /// One server instance (a data folder and a port).
    struct Instance: Sendable {
        let folder: URL
        let data: URL
        let port: Int
        var url: PostgresStoreURL { PostgresStoreURL(host: "127.0.0.1", port: port, user: "postgres", database: "postgres", tls: .disable) }

        func start(extraOptions: String = "") throws {
            let bin = try PostgresTestServer.binDir()
            try PostgresTestServer.run(bin.appendingPathComponent("pg_ctl"),
                                       ["-D", data.path, "-w", "-t", "60", "-l", folder.appendingPathComponent("log-\(port)").path,
                                        "-o", "-p \(port) -h 127.0.0.1 -k \(folder.path) -c max_connections=300 \(extraOptions)", "start"],
                                       in: folder)
        }

        /// Immediate stop (what a crash looks like to the database: recovery at the next start).
        func stop() {
            guard let bin = try? PostgresTestServer.binDir() else { return }
            _ = try? PostgresTestServer.run(bin.appendingPathComponent("pg_ctl"), ["-D", data.path, "-m", "immediate", "-w", "stop"], in: folder)
        }

        /// One value from `psql -Atc SQL` on this server.
        func psql(_ sql: String) throws -> String {
            try PostgresTestServer.run(try PostgresTestServer.binDir().appendingPathComponent("psql"),
                                       ["-h", "127.0.0.1", "-p", "\(port)", "-U", "postgres", "-d", "postgres", "-Atc", sql], in: folder)
                .trimmingCharacters(in: .whitespacesAndNewlines)
        }

        var log: String { (try? String(contentsOf: folder.appendingPathComponent("log-\(port)"), encoding: .utf8)) ?? "" }
    }

    /// initdb into a new folder and start a server on a free port.
    static func makeInstance(name: String = "db", options: String = "") throws -> Instance {
        let bin = try binDir()
        let folder = try makeFolder(name)
        let data = folder.appendingPathComponent("data")
        try run(bin.appendingPathComponent("initdb"), ["-D", data.path, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"], in: folder)
        var lastError: (any Error)?
        for _ in 0..<3 {
            let instance = Instance(folder: folder, data: data, port: freePort())
            do {
                try instance.start(extraOptions: options)
                return instance
            } catch {
                lastError = error
            }
        }
        try? FileManager.default.removeItem(at: folder)
        throw lastError ?? TestFailure("postgres did not start")
    }

    /// The server the current suite shares (set by ``PostgresServerTrait``).
    @TaskLocal static var shared: PostgresStoreURL?

    /// Runs `body` with a running server's URL; stops and deletes it afterwards, whatever happens.
    static func withPostgres<T: Sendable>(_ body: (PostgresStoreURL) async throws -> T) async throws -> T {
        let instance = try makeInstance()
        do {
            let r = try await body(instance.url)
            instance.stop()
            try? FileManager.default.removeItem(at: instance.folder)
            return r
        } catch {
            instance.stop()
            try? FileManager.default.removeItem(at: instance.folder)
            throw error
        }
    }

    /// A store URL with a schema of its own on the suite's shared server (or a server of its own).
    static func withFreshSchema<T: Sendable>(_ body: (PostgresStoreURL) async throws -> T) async throws -> T {
        let schema = "t_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(16).lowercased()
        if let shared { return try await body(shared.withSchema(schema)) }
        return try await withPostgres { try await body($0.withSchema(schema)) }
    }
}

/// Starts one PostgreSQL server for a whole suite (its tests take a schema each) and stops it when
/// the suite is done.
struct PostgresServerTrait: SuiteTrait, TestScoping {
    var isRecursive: Bool { false }
    func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        try await PostgresTestServer.withPostgres { url in
            try await PostgresTestServer.$shared.withValue(url) { try await function() }
        }
    }
}

extension Trait where Self == PostgresServerTrait {
    /// One PostgreSQL server for the suite.
    static var postgresServer: PostgresServerTrait { PostgresServerTrait() }
}
