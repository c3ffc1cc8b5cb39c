import CofferVault
import Foundation
import JWTKit

/// A verified token: whose record the request may touch.
public struct VerifiedToken: Sendable, Equatable {
    /// `iss`: the tenant id.
    public var tenant: String
    /// `sub`: the user id within the tenant.
    public var user: String
    public var scope: VaultScope
    public init(tenant: String, user: String, scope: VaultScope) {
        self.tenant = tenant
        self.user = user
        self.scope = scope
    }
}

/// Why a token was refused. Deliberately coarse: it is sealed back to the client, and the operator's
/// log gets the same words (never the token).
public enum TokenError: Error, Sendable, Equatable, CustomStringConvertible {
    case malformed
    case algorithmNotAllowed
    case unknownTenant
    case unknownKey
    case badSignature
    case wrongAudience
    case wrongScope
    case lifetimeTooLong
    case expired
    case notYetValid

    public var description: String {
        switch self {
        case .malformed: return "the token is malformed"
        case .algorithmNotAllowed: return "the token's algorithm is not the one pinned for its key"
        case .unknownTenant: return "the token's issuer is not a tenant of this realm"
        case .unknownKey: return "the token's key id is not pinned for its tenant"
        case .badSignature: return "the token's signature does not verify"
        case .wrongAudience: return "the token is for another realm"
        case .wrongScope: return "the token's scope does not allow this request"
        case .lifetimeTooLong: return "the token's lifetime (exp - iat) is longer than allowed for its scope"
        case .expired: return "the token has expired"
        case .notYetValid: return "the token was issued in the future"
        }
    }
}

/// Verifies tenant tokens against the keys pinned in the realm configuration.
///
/// The header's `alg` must equal the algorithm pinned for the key (so `none`, HMAC, or a curve
/// switch are refused before any signature check), `iss` selects the tenant and `kid` its key.
public struct TokenVerifier: Sendable {
    struct PinnedKey: Sendable {
        var alg: String
        var keys: JWTKeyCollection
    }

    private let tenants: [String: [String: PinnedKey]]
    private let audience: String
    /// Clock skew tolerated for `iat` in the future.
    private let skew: TimeInterval = 60
    private let now: @Sendable () -> Date

    public init(config: RealmConfig, realmID: RealmID, now: @escaping @Sendable () -> Date = { Date() }) async throws {
        var tenants: [String: [String: PinnedKey]] = [:]
        for t in config.tenants {
            var keys: [String: PinnedKey] = [:]
            for k in t.keys {
                let collection = JWTKeyCollection()
                switch k.alg {
                case "ES256":
                    await collection.add(ecdsa: try ES256PublicKey(pem: k.publicKeyPEM))
                case "EdDSA":
                    await collection.add(eddsa: try EdDSA.PublicKey(pem: k.publicKeyPEM))
                default:
                    throw RealmFileError(path: "realm.json", message: "tenant '\(t.id)' key '\(k.kid)': algorithm \(k.alg) is not accepted")
                }
                keys[k.kid] = PinnedKey(alg: k.alg, keys: collection)
            }
            tenants[t.id] = keys
        }
        self.tenants = tenants
        self.audience = realmID.hex
        self.now = now
    }

    private struct Header: Decodable {
        var alg: String?
        var kid: String?
        var crit: [String]?
    }

    struct Claims: JWTPayload {
        var iss: String
        var sub: String
        var aud: AudienceClaim
        var scope: String
        var exp: Double
        var iat: Double
        // Claim checks need the realm's context; they are done by `verify(_:for:)` after the signature.
        func verify(using algorithm: some JWTAlgorithm) async throws {}
    }

    /// Verifies `token` for a request that needs `scope`.
    /// - Throws: `TokenError`; nothing about the token's contents beyond that.
    public func verify(_ token: String, for type: VaultMessageType) async throws -> VerifiedToken {
        try await verifyWithExpiry(token, for: type).token
    }

    /// `verify(_:for:)`, also returning the token's signed `exp` (the realm remembers a request it
    /// served until then, so a replay of it is refused for as long as its token could be used).
    func verifyWithExpiry(_ token: String, for type: VaultMessageType) async throws -> (token: VerifiedToken, expires: Date) {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, token.utf8.count <= 8192,
              let headerData = Self.base64URL(parts[0]),
              let header = try? JSONDecoder().decode(Header.self, from: headerData),
              header.crit == nil,
              let payloadData = Self.base64URL(parts[1]),
              let unverified = try? JSONDecoder().decode(Claims.self, from: payloadData)
        else { throw TokenError.malformed }
        guard let alg = header.alg, alg == "ES256" || alg == "EdDSA" else { throw TokenError.algorithmNotAllowed }
        guard let keys = tenants[unverified.iss] else { throw TokenError.unknownTenant }
        let pinned: PinnedKey
        if let kid = header.kid {
            guard let k = keys[kid] else { throw TokenError.unknownKey }
            pinned = k
        } else {
            guard keys.count == 1, let k = keys.values.first else { throw TokenError.unknownKey }
            pinned = k
        }
        guard pinned.alg == alg else { throw TokenError.algorithmNotAllowed }
        let claims: Claims
        do {
            claims = try await pinned.keys.verify(token, as: Claims.self)
        } catch {
            throw TokenError.badSignature
        }
        // The signed claims, not the unverified ones, decide from here on.
        guard claims.iss == unverified.iss, !claims.sub.isEmpty else { throw TokenError.malformed }
        guard claims.aud.value == [audience] else { throw TokenError.wrongAudience }
        guard let scope = VaultScope(rawValue: claims.scope) else { throw TokenError.malformed }
        guard scope.allows(type) else { throw TokenError.wrongScope }
        let lifetime = claims.exp - claims.iat
        guard lifetime > 0, lifetime <= Double(scope.maxLifetimeSeconds) else { throw TokenError.lifetimeTooLong }
        let t = now().timeIntervalSince1970
        guard t < claims.exp else { throw TokenError.expired }
        guard claims.iat <= t + skew else { throw TokenError.notYetValid }
        return (VerifiedToken(tenant: claims.iss, user: claims.sub, scope: scope), Date(timeIntervalSince1970: claims.exp))
    }

    static func base64URL(_ s: Substring) -> Data? {
        var b = s.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        // JWS segments carry no padding.
        guard !b.contains("=") else { return nil }
        while b.count % 4 != 0 { b += "=" }
        return Data(base64Encoded: b)
    }
}
