import CofferVault
import Foundation

/// The realm's operator configuration (`realm.json`, not secret): its Shamir x-coordinate, the guess
/// limit, the public URL clients use, and the tenants whose tokens it accepts with their pinned keys.
public struct RealmConfig: Codable, Sendable, Equatable {
    /// A tenant (the app's account service): its `iss` and the keys that may sign its tokens.
    public struct Tenant: Codable, Sendable, Equatable {
        /// The exact `iss` of its tokens.
        public var id: String
        public var keys: [TenantKey]
        public init(id: String, keys: [TenantKey]) {
            self.id = id
            self.keys = keys
        }
    }

    /// A pinned tenant signing key: the only algorithm accepted with it is `alg`.
    public struct TenantKey: Codable, Sendable, Equatable {
        /// Matched against the token header's `kid` (a token without `kid` needs a tenant with one key).
        public var kid: String
        /// `ES256` or `EdDSA` (Ed25519). Nothing else is accepted: never `none`, never HMAC.
        public var alg: String
        /// The public key as PEM (SubjectPublicKeyInfo).
        public var publicKeyPEM: String
        public init(kid: String, alg: String, publicKeyPEM: String) {
            self.kid = kid
            self.alg = alg
            self.publicKeyPEM = publicKeyPEM
        }
    }

    /// A token bucket: `burst` requests at once, refilled at `perMinute`.
    public struct RateLimit: Codable, Sendable, Equatable {
        public var burst: Int
        public var perMinute: Double
        public init(burst: Int, perMinute: Double) {
            self.burst = burst
            self.perMinute = perMinute
        }
    }

    /// Request limits (`"limits"` in `realm.json`; every field optional, defaults below). A request
    /// whose token verified takes one unit from its token's bucket and one from its user's; when
    /// either is empty the answer is a sealed `busy` and nothing else happens.
    public struct Limits: Codable, Sendable, Equatable {
        /// Per token (the same JWT): default 30 at once, 30 a minute.
        public var perToken: RateLimit
        /// Per user (tenant and `sub`), over all their tokens: default 120 at once, 120 a minute.
        public var perUser: RateLimit
        /// Log lines per minute for refused tokens (the rest are counted, and summed up in one line).
        public var refusedTokenLogLinesPerMinute: Int

        public static let `default` = Limits(perToken: RateLimit(burst: 30, perMinute: 30),
                                             perUser: RateLimit(burst: 120, perMinute: 120),
                                             refusedTokenLogLinesPerMinute: 10)

        /// Limits no benchmark or flood test reaches (1,000,000 at once and a minute).
        public static let unlimitedForBenchmarks = Limits(perToken: RateLimit(burst: 1_000_000, perMinute: 1_000_000),
                                                          perUser: RateLimit(burst: 1_000_000, perMinute: 1_000_000),
                                                          refusedTokenLogLinesPerMinute: 10)

        public init(perToken: RateLimit, perUser: RateLimit, refusedTokenLogLinesPerMinute: Int) {
            self.perToken = perToken
            self.perUser = perUser
            self.refusedTokenLogLinesPerMinute = refusedTokenLogLinesPerMinute
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            let d = Limits.default
            perToken = try c.decodeIfPresent(RateLimit.self, forKey: .perToken) ?? d.perToken
            perUser = try c.decodeIfPresent(RateLimit.self, forKey: .perUser) ?? d.perUser
            refusedTokenLogLinesPerMinute = try c.decodeIfPresent(Int.self, forKey: .refusedTokenLogLinesPerMinute) ?? d.refusedTokenLogLinesPerMinute
        }

        func validate(path: String) throws {
            for (name, r) in [("perToken", perToken), ("perUser", perUser)] {
                guard (1...1_000_000).contains(r.burst), r.perMinute.isFinite, r.perMinute > 0, r.perMinute <= 60_000_000 else {
                    throw RealmFileError(path: path, message: "\(path): limits.\(name) needs burst 1...1000000 and perMinute above 0 (at most 60000000)")
                }
            }
            guard (0...100_000).contains(refusedTokenLogLinesPerMinute) else {
                throw RealmFileError(path: path, message: "\(path): limits.refusedTokenLogLinesPerMinute must be 0...100000")
            }
        }
    }

    /// This realm's Shamir x-coordinate (1...255), stored in each record at registration.
    public var x: UInt8
    /// Wrong guesses before a record is destroyed (the design's L).
    public var guessLimit: Int
    /// The URL clients reach this realm at (informational; printed in the descriptor).
    public var url: String?
    public var tenants: [Tenant]
    /// Request limits; absent: `Limits.default`.
    public var limits: Limits?
    /// `HOST:PORT` of the admin listener (`/health`, `/metrics`) that `coffer realm serve` opens
    /// unless `--admin-listen` overrides it; absent: no admin listener.
    public var adminListen: String?
    /// Where the realm keeps its state (``RealmStoreLocation``): absent or `sqlite`, `realm.sqlite` in
    /// its folder; `sqlite:PATH`; or `postgres://USER@HOST:PORT/DATABASE[?schema=NAME...]`. Keep the
    /// password out of it (`PGPASSWORD`): realm.json is not a secret file.
    public var store: String?

    public init(x: UInt8, guessLimit: Int = 10, url: String? = nil, tenants: [Tenant] = [], limits: Limits? = nil) {
        self.x = x
        self.guessLimit = guessLimit
        self.url = url
        self.tenants = tenants
        self.limits = limits
    }

    /// The limits in force (`limits`, or the defaults).
    public var effectiveLimits: Limits { limits ?? .default }

    /// Checks the values a realm cannot run with.
    public func validate(path: String = "realm.json") throws {
        guard x >= 1 else { throw RealmFileError(path: path, message: "\(path): x must be 1...255") }
        guard (1...100).contains(guessLimit) else { throw RealmFileError(path: path, message: "\(path): guessLimit must be 1...100") }
        for t in tenants {
            guard !t.id.isEmpty, !t.keys.isEmpty else { throw RealmFileError(path: path, message: "\(path): tenant '\(t.id)' needs an id and at least one key") }
            for k in t.keys where !["ES256", "EdDSA"].contains(k.alg) {
                throw RealmFileError(path: path, message: "\(path): tenant '\(t.id)' key '\(k.kid)': algorithm \(k.alg) is not accepted (ES256 or EdDSA only)")
            }
        }
        guard Set(tenants.map(\.id)).count == tenants.count else { throw RealmFileError(path: path, message: "\(path): duplicate tenant id") }
        try limits?.validate(path: path)
        if let adminListen {
            do { _ = try RealmServer.parseListen(adminListen, option: "adminListen") } catch let e as RealmFileError {
                throw RealmFileError(path: path, message: "\(path): \(e.message)")
            }
        }
        if let store {
            do { _ = try RealmStoreLocation.parse(store, directory: RealmDirectory(URL(fileURLWithPath: "/"))) } catch let e as RealmFileError {
                throw RealmFileError(path: path, message: "\(path): store: \(e.message)")
            }
        }
    }

    public static func load(from url: URL) throws -> RealmConfig {
        guard let data = try? Data(contentsOf: url) else {
            throw RealmFileError(path: url.path, message: "cannot read \(url.path) (run `coffer realm init --dir` first?)")
        }
        let config: RealmConfig
        do {
            config = try JSONDecoder().decode(RealmConfig.self, from: data)
        } catch {
            throw RealmFileError(path: url.path, message: "\(url.path) is not a valid realm configuration: \(error)")
        }
        try config.validate(path: url.path)
        return config
    }

    public func save(to url: URL) throws {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        try AtomicFile.write(Array(try enc.encode(self)) + [10], to: url, mode: 0o644)
    }
}

/// A realm's folder: `realm.key` (0600 secrets), `realm.json` (configuration), `realm.sqlite` (the store).
public struct RealmDirectory: Sendable {
    public var url: URL
    public init(_ url: URL) { self.url = url }
    public var keyFile: URL { url.appendingPathComponent("realm.key") }
    public var configFile: URL { url.appendingPathComponent("realm.json") }
    public var databaseFile: URL { url.appendingPathComponent("realm.sqlite") }

    public var exists: Bool { FileManager.default.fileExists(atPath: keyFile.path) }

    /// Creates a new realm here; refuses to overwrite an existing key file (that would destroy every
    /// record the realm holds).
    @discardableResult
    public func initialize(x: UInt8, guessLimit: Int = 10, url: String? = nil, tenants: [RealmConfig.Tenant] = [],
                           store: String? = nil) throws -> (RealmKeys, RealmConfig) {
        if exists {
            throw RealmFileError(path: keyFile.path, message: "\(keyFile.path) already exists; a realm is never re-initialised in place (its records would become unreadable)")
        }
        var config = RealmConfig(x: x, guessLimit: guessLimit, url: url, tenants: tenants)
        config.store = store
        try config.validate()
        let keys = try RealmKeys.generate()
        try FileManager.default.createDirectory(at: self.url, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        try keys.save(to: keyFile)
        try config.save(to: configFile)
        return (keys, config)
    }

    public func load() throws -> (RealmKeys, RealmConfig) {
        (try RealmKeys.load(from: keyFile), try RealmConfig.load(from: configFile))
    }
}

extension RealmKeys {
    /// The descriptor clients pin: id, URL and HPKE public keys (newest first).
    public func descriptor(url: String) -> RealmDescriptor {
        RealmDescriptor(id: realmIDHex, url: url,
                        keys: hpkeKeys.reversed().map { RealmKeyDescriptor(id: $0.id, publicKey: $0.publicKey.rawRepresentation.base64EncodedString()) })
    }
}
