#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import JWTKit

/// A development tenant: an ES256 key (made by `coffer realm cluster`, stored beside `vault.json`)
/// that mints realm tokens locally. A real deployment's tenant is the app's server; its public key
/// is what realms pin.
public struct DevelopmentTenant: TokenProvider {
    public let tenant: String
    private let keys: JWTKeyCollection
    private let now: @Sendable () -> Date

    /// - Parameters:
    ///   - tenant: The `iss` to use (the configuration's tenant).
    ///   - privateKeyPEM: The ES256 private key (PEM).
    public init(tenant: String, privateKeyPEM: String, now: @escaping @Sendable () -> Date = { Date() }) async throws {
        self.tenant = tenant
        self.now = now
        let key = try ES256PrivateKey(pem: privateKeyPEM)
        keys = await JWTKeyCollection().add(ecdsa: key)
    }

    /// The development tenant a configuration names (`developmentTenantKey`, relative to `configURL`).
    public static func forConfiguration(_ config: VaultConfiguration, at configURL: URL) async throws -> DevelopmentTenant {
        guard let rel = config.developmentTenantKey else {
            throw VaultConfigurationError("the vault configuration names no development tenant key; tokens must come from the app's server")
        }
        let url = rel.hasPrefix("/") ? URL(fileURLWithPath: rel) : configURL.deletingLastPathComponent().appendingPathComponent(rel)
        let pem: String
        do { pem = try String(contentsOf: url, encoding: .utf8) } catch {
            throw VaultConfigurationError("cannot read the development tenant key \(url.path)")
        }
        return try await DevelopmentTenant(tenant: config.tenant, privateKeyPEM: pem)
    }

    /// Makes a new ES256 key pair: (private PEM, public PEM).
    public static func generateKeyPEM() -> (privateKey: String, publicKey: String) {
        let key = ES256PrivateKey()
        return (key.pemRepresentation, key.publicKey.pemRepresentation)
    }

    public func token(user: String, realmID: RealmID, scope: VaultScope) async throws -> String {
        // A minute short of the bound, so clock skew at the realm never makes it too long-lived.
        let lifetime = TimeInterval(min(scope.maxLifetimeSeconds, 5 * 60))
        let claims = RealmTokenClaims(tenant: tenant, user: user, realmID: realmID, scope: scope,
                                      issuedAt: now(), lifetime: lifetime)
        return try await keys.sign(claims)
    }
}
