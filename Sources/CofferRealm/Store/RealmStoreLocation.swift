import Foundation
import Logging

/// Where a realm keeps its state: the SQLite file in its folder (the default) or a PostgreSQL
/// database. Written as `--store` and as `store` in `realm.json`:
///
/// - `sqlite` — `realm.sqlite` in the realm's folder (also what no `store` means);
/// - `sqlite:PATH` — another SQLite file;
/// - `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?schema=NAME&sslmode=disable|prefer|require&pool=N]`
///   (`postgresql://` too). The password is best left out of the URL and given in `PGPASSWORD`.
public enum RealmStoreLocation: Sendable, Equatable, CustomStringConvertible {
    case sqlite(URL)
    case postgres(PostgresStoreURL)

    /// Parses a `--store` / `store` value; `sqlite` means `directory`'s `realm.sqlite`.
    public static func parse(_ text: String, directory: RealmDirectory) throws -> RealmStoreLocation {
        let s = text.trimmingCharacters(in: .whitespaces)
        if s.isEmpty || s == "sqlite" { return .sqlite(directory.databaseFile) }
        if s.hasPrefix("sqlite:") {
            let path = String(s.dropFirst("sqlite:".count))
            guard !path.isEmpty else { throw RealmFileError(path: "", message: "store 'sqlite:' needs a file path, e.g. sqlite:/var/lib/coffer-realm/realm.sqlite") }
            return .sqlite(URL(fileURLWithPath: path, relativeTo: directory.url).standardizedFileURL)
        }
        if s.hasPrefix("postgres://") || s.hasPrefix("postgresql://") { return .postgres(try PostgresStoreURL(parsing: s)) }
        throw RealmFileError(path: "", message: "unknown store '\(Self.redact(s))': use sqlite, sqlite:PATH or postgres://USER@HOST:PORT/DATABASE")
    }

    /// The store named in `config` (`store`), or the folder's SQLite file.
    public static func configured(_ config: RealmConfig, directory: RealmDirectory) throws -> RealmStoreLocation {
        try parse(config.store ?? "sqlite", directory: directory)
    }

    /// Safe to log: never a password.
    public var description: String {
        switch self {
        case .sqlite(let url): return "sqlite:\(url.path)"
        case .postgres(let p): return p.description
        }
    }

    /// Opens (creating tables if needed) the store.
    public func open(keys: RealmKeys, config: RealmConfig, limits: RealmStore.Limits? = nil, logger: Logger? = nil,
                     now: @escaping @Sendable () -> Date = { Date() }) async throws -> any RealmDatabase {
        switch self {
        case .sqlite(let url):
            return try RealmStore(url: url, keys: keys, config: config, limits: limits, now: now)
        case .postgres(let p):
            #if canImport(PostgresNIO)
            return try await PostgresRealmStore.open(url: p, keys: keys, config: config, limits: limits, logger: logger, now: now)
            #else
            throw RealmFileError(path: "", message: "the PostgreSQL store is available on Linux and macOS servers only")
            #endif
        }
    }

    /// `text` with any password in a URL replaced by `***`.
    static func redact(_ text: String) -> String {
        guard let scheme = text.range(of: "://"), let at = text[scheme.upperBound...].firstIndex(of: "@") else { return text }
        let userinfo = text[scheme.upperBound..<at]
        guard let colon = userinfo.firstIndex(of: ":") else { return text }
        return String(text[..<colon]) + ":***" + String(text[at...])
    }
}

/// A parsed `postgres://` store URL. `description` never shows the password.
public struct PostgresStoreURL: Sendable, Equatable, CustomStringConvertible {
    public enum TLSMode: String, Sendable, Equatable { case disable, prefer, require }

    public var host: String
    public var port: Int
    public var user: String
    /// From the URL, else `PGPASSWORD` when the store is opened; nil: none (trust or peer authentication).
    public var password: String?
    public var database: String
    /// A schema of its own inside the database (several realms in one database); nil: `public`.
    public var schema: String?
    public var tls: TLSMode
    /// Most connections this process opens to the database (the pool's size).
    public var maxConnections: Int

    public init(host: String, port: Int = 5432, user: String, password: String? = nil, database: String, schema: String? = nil,
                tls: TLSMode = .prefer, maxConnections: Int = 16) {
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.database = database
        self.schema = schema
        self.tls = tls
        self.maxConnections = maxConnections
    }

    public init(parsing text: String) throws {
        func fail(_ why: String) -> RealmFileError {
            RealmFileError(path: "", message: "store URL '\(RealmStoreLocation.redact(text))': \(why) (expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?schema=NAME&sslmode=disable|prefer|require&pool=N])")
        }
        guard let c = URLComponents(string: text), c.scheme == "postgres" || c.scheme == "postgresql" else { throw fail("not a postgres:// URL") }
        guard let host = c.host, !host.isEmpty else { throw fail("no host") }
        let db = c.path.hasPrefix("/") ? String(c.path.dropFirst()) : c.path
        guard !db.isEmpty, !db.contains("/") else { throw fail("no database name") }
        let port = c.port ?? 5432
        guard (1...65535).contains(port) else { throw fail("bad port") }
        self.init(host: host, port: port, user: c.user.flatMap { $0.removingPercentEncoding } ?? "postgres",
                  password: c.password.flatMap { $0.removingPercentEncoding }, database: db)
        for item in c.queryItems ?? [] {
            let v = item.value ?? ""
            switch item.name {
            case "schema":
                guard Self.isIdentifier(v) else { throw fail("schema must be lowercase letters, digits and _ (starting with a letter or _), at most 63") }
                schema = v
            case "sslmode":
                guard let m = TLSMode(rawValue: v) else { throw fail("sslmode must be disable, prefer or require") }
                tls = m
            case "pool":
                guard let n = Int(v), (1...1000).contains(n) else { throw fail("pool must be 1...1000") }
                maxConnections = n
            default:
                throw fail("unknown parameter '\(item.name)'")
            }
        }
    }

    static func isIdentifier(_ s: String) -> Bool {
        guard let first = s.unicodeScalars.first, s.unicodeScalars.count <= 63 else { return false }
        // Lowercase only: PostgreSQL folds the unquoted search_path to lowercase.
        func letter(_ c: Unicode.Scalar) -> Bool { ("a"..."z").contains(c) }
        func digit(_ c: Unicode.Scalar) -> Bool { ("0"..."9").contains(c) }
        guard letter(first) || first == "_" else { return false }
        return s.unicodeScalars.allSatisfy { letter($0) || digit($0) || $0 == "_" }
    }

    /// The same database with another schema (`coffer realm cluster` gives each realm its own).
    public func withSchema(_ schema: String) -> PostgresStoreURL {
        var u = self
        u.schema = schema
        return u
    }

    /// The URL text (with the password as given, if `includingPassword`; otherwise none).
    public func urlString(includingPassword: Bool = false) -> String {
        var c = URLComponents()
        c.scheme = "postgres"
        c.user = user
        if includingPassword, let password { c.password = password }
        c.host = host
        c.port = port
        c.path = "/" + database
        var q: [URLQueryItem] = []
        if let schema { q.append(URLQueryItem(name: "schema", value: schema)) }
        if tls != .prefer { q.append(URLQueryItem(name: "sslmode", value: tls.rawValue)) }
        if maxConnections != 16 { q.append(URLQueryItem(name: "pool", value: "\(maxConnections)")) }
        if !q.isEmpty { c.queryItems = q }
        return c.string ?? "postgres://\(user)@\(host):\(port)/\(database)"
    }

    /// Safe to log: `postgres://user:***@host:port/db?schema=…` (the password, if any, starred).
    public var description: String {
        let s = urlString()
        guard password != nil, let r = s.range(of: "@") else { return s }
        return String(s[..<r.lowerBound]) + ":***" + String(s[r.lowerBound...])
    }
}
