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

    /// This realm's Shamir x-coordinate (1...255), stored in each record at registration.
    public var x: UInt8
    /// Wrong guesses before a record is destroyed (the design's L).
    public var guessLimit: Int
    /// The URL clients reach this realm at (informational; printed in the descriptor).
    public var url: String?
    public var tenants: [Tenant]

    public init(x: UInt8, guessLimit: Int = 10, url: String? = nil, tenants: [Tenant] = []) {
        self.x = x
        self.guessLimit = guessLimit
        self.url = url
        self.tenants = tenants
    }

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
    public func initialize(x: UInt8, guessLimit: Int = 10, url: String? = nil, tenants: [RealmConfig.Tenant] = []) throws -> (RealmKeys, RealmConfig) {
        if exists {
            throw RealmFileError(path: keyFile.path, message: "\(keyFile.path) already exists; a realm is never re-initialised in place (its records would become unreadable)")
        }
        let config = RealmConfig(x: x, guessLimit: guessLimit, url: url, tenants: tenants)
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
