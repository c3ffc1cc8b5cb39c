#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import JWTKit

/// The claims of a realm token (JWT, ES256 or EdDSA): `iss` tenant, `sub` user, `aud` the realm id
/// in lowercase hex, `scope`, `iat`, `exp` (`exp - iat` ≤ 24 h; ≤ 10 min for register and delete).
public struct RealmTokenClaims: JWTPayload, Equatable {
    public var iss: IssuerClaim
    public var sub: SubjectClaim
    public var aud: AudienceClaim
    public var scope: String
    public var iat: IssuedAtClaim
    public var exp: ExpirationClaim

    /// Clock skew tolerated on `iat` (a token issued slightly in the future).
    public static let clockSkewSeconds: TimeInterval = 60

    public init(tenant: String, user: String, realmID: RealmID, scope: VaultScope, issuedAt: Date, lifetime: TimeInterval) {
        iss = IssuerClaim(value: tenant)
        sub = SubjectClaim(value: user)
        aud = AudienceClaim(value: [realmID.hex])
        self.scope = scope.rawValue
        iat = IssuedAtClaim(value: issuedAt)
        exp = ExpirationClaim(value: issuedAt.addingTimeInterval(lifetime))
    }

    /// The parsed scope, if known.
    public var vaultScope: VaultScope? { VaultScope(rawValue: scope) }

    /// Signature-independent checks run by jwt-kit during verification: not expired, known scope,
    /// lifetime within the scope's bound, not issued in the future.
    public func verify(using algorithm: some JWTAlgorithm) async throws {
        try check(now: Date())
    }

    /// The same checks with an explicit clock.
    public func check(now: Date) throws(RealmTokenError) {
        guard let scope = vaultScope else { throw .unknownScope }
        guard exp.value > now else { throw .expired }
        guard iat.value <= now.addingTimeInterval(Self.clockSkewSeconds) else { throw .issuedInFuture }
        guard exp.value.timeIntervalSince(iat.value) <= TimeInterval(scope.maxLifetimeSeconds) else { throw .lifetimeTooLong }
        guard !iss.value.isEmpty, !sub.value.isEmpty, iss.value.utf8.count <= 1024, sub.value.utf8.count <= 1024 else { throw .badSubject }
    }

    /// What a realm checks beyond the signature and `check(now:)`: the audience is exactly this
    /// realm (lowercase hex) and the scope admits `type`.
    public func authorizes(_ type: VaultMessageType, at realmID: RealmID) throws(RealmTokenError) {
        guard aud.value == [realmID.hex] else { throw .wrongAudience }
        guard let scope = vaultScope, scope.allows(type) else { throw .scopeNotAllowed }
    }

    /// `tenant` bytes for derivations (`lp(tenant)`): the exact UTF-8 of `iss`.
    public var tenantBytes: [UInt8] { Array(iss.value.utf8) }
    /// `user` bytes for derivations (`lp(user)`): the exact UTF-8 of `sub`.
    public var userBytes: [UInt8] { Array(sub.value.utf8) }
}

/// Why a token was refused.
public enum RealmTokenError: Error, Sendable, Equatable {
    case unknownScope, expired, issuedInFuture, lifetimeTooLong, badSubject, wrongAudience, scopeNotAllowed
}

/// Supplies realm tokens. A real app asks its server (the tenant); development vaults mint locally.
public protocol TokenProvider: Sendable {
    /// A token for `user` at realm `realmID` with `scope`.
    func token(user: String, realmID: RealmID, scope: VaultScope) async throws -> String
}
