#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Crypto

/// One pinned HPKE public key of a realm, as JSON: `{"id": 1, "publicKey": "<base64, 1216 bytes>"}`.
public struct RealmKeyDescriptor: Codable, Sendable, Equatable {
    public var id: UInt32
    /// Standard base64 of the raw X-Wing public key.
    public var publicKey: String

    public init(id: UInt32, publicKey: String) {
        self.id = id
        self.publicKey = publicKey
    }

    public init(_ key: RealmPublicKey) {
        self.init(id: key.id, publicKey: Data(key.rawRepresentation).base64EncodedString())
    }

    /// The parsed key.
    public func realmPublicKey() throws(VaultConfigurationError) -> RealmPublicKey {
        guard let raw = Data(base64Encoded: publicKey) else {
            throw VaultConfigurationError("key \(id): publicKey is not base64")
        }
        do {
            return try RealmPublicKey(id: id, rawRepresentation: Array(raw))
        } catch {
            throw VaultConfigurationError("key \(id): publicKey is not a \(VaultChannel.publicKeySize)-byte X-Wing public key")
        }
    }
}

/// What a realm publishes about itself (`GET /v1/descriptor`, and printed by `coffer realm init`):
/// `{"id": "<32 hex>", "url": "...", "keys": [...]}`. Clients pin it; they never trust it live.
public struct RealmDescriptor: Codable, Sendable, Equatable {
    /// The realm's 16-byte id, lowercase hex.
    public var id: String
    /// Base URL (the message paths are appended), e.g. `http://127.0.0.1:7301`.
    public var url: String
    /// Live HPKE public keys; during rotation two are listed, the newest first.
    public var keys: [RealmKeyDescriptor]

    public init(id: String, url: String, keys: [RealmKeyDescriptor]) {
        self.id = id
        self.url = url
        self.keys = keys
    }
}

/// One realm as the client's vault configuration pins it: the descriptor plus its Shamir `x`.
public struct VaultRealm: Codable, Sendable, Equatable {
    public var id: String
    public var url: String
    public var keys: [RealmKeyDescriptor]
    /// Shamir x-coordinate, 1...255, distinct per realm. Always from here, never from the realm.
    public var x: UInt8

    public init(descriptor: RealmDescriptor, x: UInt8) {
        self.id = descriptor.id
        self.url = descriptor.url
        self.keys = descriptor.keys
        self.x = x
    }

    public init(id: String, url: String, keys: [RealmKeyDescriptor], x: UInt8) {
        self.id = id
        self.url = url
        self.keys = keys
        self.x = x
    }

    public var descriptor: RealmDescriptor { RealmDescriptor(id: id, url: url, keys: keys) }
}

/// The client's pinned vault configuration (`vault.json`):
///
/// ```json
/// {
///   "tenant": "coffer-dev",
///   "threshold": 3,
///   "realms": [ {"id": "…32 hex…", "url": "http://127.0.0.1:7301", "x": 1,
///                "keys": [{"id": 1, "publicKey": "…base64…"}]}, … ],
///   "developmentTenantKey": "tenant-dev-key.pem"
/// }
/// ```
/// `developmentTenantKey` (optional) names, relative to the file, the PEM ES256 private key of a
/// development tenant that mints tokens locally (written by `coffer realm cluster`).
public struct VaultConfiguration: Codable, Sendable, Equatable {
    /// The tenant (token `iss`) whose users this vault serves.
    public var tenant: String
    /// `t`: realms needed to recover. `2t > n`.
    public var threshold: Int
    public var realms: [VaultRealm]
    /// Path (relative to the configuration file) of the development tenant's signing key, if any.
    public var developmentTenantKey: String?
    /// Default policy for new registrations (optional; `VaultPolicy.default` otherwise).
    public var policy: PolicyJSON?

    /// JSON form of a policy: `{"log2N": 16, "r": 8, "p": 1, "guessLimit": 10, "minPasswordLength": 6}`.
    /// `minPasswordLength` is a client-side rule for new passwords (not sent to realms); default
    /// ``VaultConfiguration/defaultMinimumPasswordLength``.
    public struct PolicyJSON: Codable, Sendable, Equatable {
        public var log2N: UInt8
        public var r: UInt8
        public var p: UInt8
        public var guessLimit: UInt8
        public var minPasswordLength: Int?
        public init(_ p: VaultPolicy, minPasswordLength: Int? = nil) {
            log2N = p.log2N
            r = p.r
            self.p = p.p
            guessLimit = p.guessLimit
            self.minPasswordLength = minPasswordLength
        }
    }

    /// The shortest new password a client accepts unless vault.json says otherwise (characters).
    public static let defaultMinimumPasswordLength = 6
    /// The range `minPasswordLength` must be in.
    public static let minimumPasswordLengthRange = 1...1024

    /// The file name `coffer realm cluster` writes beside `vault.json` for the development tenant's
    /// ES256 private key (PEM, 0600).
    public static let developmentTenantKeyFileName = "tenant-dev-key.pem"
    /// The tenant name of the development cluster.
    public static let developmentTenantName = "coffer-dev"

    public init(tenant: String, threshold: Int, realms: [VaultRealm], developmentTenantKey: String? = nil, policy: VaultPolicy? = nil) {
        self.tenant = tenant
        self.threshold = threshold
        self.realms = realms
        self.developmentTenantKey = developmentTenantKey
        self.policy = policy.map { PolicyJSON($0) }
    }

    /// `n`.
    public var realmCount: Int { realms.count }

    /// The policy for new registrations.
    public func registrationPolicy() throws(VaultConfigurationError) -> VaultPolicy {
        guard let p = policy else { return .default }
        do {
            return try VaultPolicy(log2N: p.log2N, r: p.r, p: p.p, guessLimit: p.guessLimit)
        } catch {
            throw VaultConfigurationError("policy: \(error)")
        }
    }

    /// Checks every rule: 1 ≤ t ≤ n ≤ 255, 2t > n, distinct ids, distinct x in 1...255, at least
    /// one valid key per realm, http(s) URLs, tenant non-empty and short.
    public func validated() throws(VaultConfigurationError) -> ValidatedVaultConfiguration {
        guard !tenant.isEmpty, tenant.utf8.count <= 1024 else { throw VaultConfigurationError("tenant must be 1...1024 bytes") }
        let n = realms.count
        guard n >= 1, n <= 255 else { throw VaultConfigurationError("a vault needs 1...255 realms, this one lists \(n)") }
        guard threshold >= 1, threshold <= n else { throw VaultConfigurationError("threshold \(threshold) must be between 1 and the number of realms (\(n))") }
        guard 2 * threshold > n else { throw VaultConfigurationError("threshold \(threshold) must be more than half of \(n) realms (2t > n)") }
        var ids = Set<RealmID>(), xs = Set<UInt8>()
        var out = [PinnedRealm]()
        for (i, realm) in realms.enumerated() {
            guard let id = RealmID(hex: realm.id.lowercased()) else {
                throw VaultConfigurationError("realm #\(i + 1): id must be 32 hex digits")
            }
            guard ids.insert(id).inserted else { throw VaultConfigurationError("realm \(id): listed twice") }
            guard realm.x >= 1 else { throw VaultConfigurationError("realm \(id): x must be 1...255") }
            guard xs.insert(realm.x).inserted else { throw VaultConfigurationError("realm \(id): x = \(realm.x) is used by another realm") }
            guard let url = URL(string: realm.url), let scheme = url.scheme?.lowercased(), scheme == "http" || scheme == "https", url.host != nil else {
                throw VaultConfigurationError("realm \(id): url must be an http(s) URL")
            }
            guard !realm.keys.isEmpty else { throw VaultConfigurationError("realm \(id): no public key") }
            var keys = [RealmPublicKey]()
            for k in realm.keys {
                do { keys.append(try k.realmPublicKey()) } catch { throw VaultConfigurationError("realm \(id): \(error.message)") }
            }
            out.append(PinnedRealm(id: id, baseURL: realm.url.hasSuffix("/") ? String(realm.url.dropLast()) : realm.url,
                                   x: realm.x, keys: keys))
        }
        let minLength = policy?.minPasswordLength ?? Self.defaultMinimumPasswordLength
        guard Self.minimumPasswordLengthRange.contains(minLength) else {
            throw VaultConfigurationError("policy: minPasswordLength must be between 1 and 1024 characters")
        }
        return ValidatedVaultConfiguration(tenant: tenant, threshold: threshold, realms: out, policy: try registrationPolicy(),
                                           minimumPasswordLength: minLength)
    }

    /// Reads and validates `vault.json`.
    public static func load(from url: URL) throws(VaultConfigurationError) -> VaultConfiguration {
        let data: Data
        do { data = try Data(contentsOf: url) } catch { throw VaultConfigurationError("cannot read the vault configuration \(url.path)") }
        let config: VaultConfiguration
        do { config = try JSONDecoder().decode(VaultConfiguration.self, from: data) } catch {
            throw VaultConfigurationError("the vault configuration \(url.path) is not valid JSON of the expected shape: \(error)")
        }
        _ = try config.validated()
        return config
    }

    /// Pretty JSON with sorted keys.
    public func jsonData() throws -> Data {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return try enc.encode(self)
    }
}

/// A realm with its parsed, pinned values.
public struct PinnedRealm: Sendable {
    public let id: RealmID
    /// Base URL without a trailing slash.
    public let baseURL: String
    public let x: UInt8
    /// Keys in configuration order; the first is used for requests.
    public let keys: [RealmPublicKey]
    public init(id: RealmID, baseURL: String, x: UInt8, keys: [RealmPublicKey]) {
        self.id = id
        self.baseURL = baseURL
        self.x = x
        self.keys = keys
    }
}

/// A configuration that passed every check.
public struct ValidatedVaultConfiguration: Sendable {
    public let tenant: String
    public let threshold: Int
    public let realms: [PinnedRealm]
    public let policy: VaultPolicy
    /// New passwords shorter than this (characters, after NFC) are refused before anything is sent.
    public let minimumPasswordLength: Int
    public var n: Int { realms.count }
    /// `n - t + 1`: acknowledgements needed for a registration or delete to take effect.
    public var effectiveQuorum: Int { n - threshold + 1 }
}

/// The vault configuration is unusable; the message says what to fix.
public struct VaultConfigurationError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
