@_spi(Fuzzing) import CofferCore
import CofferVault
import Crypto
import Foundation

/// Fuzz harness for the realm's token verification (every request carries a tenant JWT). See
/// docs/FUZZING.md.
@_spi(Fuzzing)
public enum RealmFuzzHarnesses {
    public static var all: [FuzzHarness] { [token] }

    /// The verifier's clock: fixed, so an input means the same thing on every run.
    static let now: TimeInterval = 1_800_000_000
    static let realmID = RealmID(uncheckedBytes: Array(0x10..<0x20))
    /// Fixed tenant keys (32 fixed bytes are a valid P-256 / Ed25519 private key).
    static let es256 = try! P256.Signing.PrivateKey(rawRepresentation: [UInt8](repeating: 0x11, count: 32))
    static let eddsa = try! Curve25519.Signing.PrivateKey(rawRepresentation: [UInt8](repeating: 0x22, count: 32))
    static let soloKey = try! P256.Signing.PrivateKey(rawRepresentation: [UInt8](repeating: 0x33, count: 32))

    /// Tenant `coffer-dev` pins `k1` (ES256) and `k2` (EdDSA); tenant `solo` pins one ES256 key,
    /// so a token without `kid` is accepted for it.
    static let verifier = Task<TokenVerifier, any Error> {
        let edPEM = "-----BEGIN PUBLIC KEY-----\n"
            + (Data([0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00]) + eddsa.publicKey.rawRepresentation).base64EncodedString()
            + "\n-----END PUBLIC KEY-----\n"
        let config = RealmConfig(x: 1, tenants: [
            .init(id: "coffer-dev", keys: [.init(kid: "k1", alg: "ES256", publicKeyPEM: es256.publicKey.pemRepresentation),
                                           .init(kid: "k2", alg: "EdDSA", publicKeyPEM: edPEM)]),
            .init(id: "solo", keys: [.init(kid: "s1", alg: "ES256", publicKeyPEM: soloKey.publicKey.pemRepresentation)]),
        ])
        return try await TokenVerifier(config: config, realmID: realmID, now: { Date(timeIntervalSince1970: now) })
    }

    /// Input: a mode byte `m` (the request type is `allCases[(m >> 2) % count]`), then:
    /// `m & 3` = 0 or 3: the token itself; 1: `header JSON ‖ 0x00 ‖ claims JSON`, signed here with
    /// the ES256 key `k1` (so the fuzzer reaches the checks after the signature); 2: the same,
    /// signed with the EdDSA key `k2`. An accepted token must satisfy every rule the realm states
    /// (issuer, subject, audience, scope, lifetime, expiry, not issued in the future), re-checked
    /// here from the signed claims.
    public static let token = FuzzHarness(
        name: "realm-token",
        dictionary: [#""alg""#, #""ES256""#, #""EdDSA""#, #""none""#, #""HS256""#, #""kid""#, #""k1""#, #""k2""#, #""crit""#,
                     #""iss""#, #""sub""#, #""aud""#, #""scope""#, #""exp""#, #""iat""#, #""coffer-dev""#, #""solo""#,
                     #""recover""#, #""register""#, #""status""#, #""delete""#, #""head""#, "1800000000", "1800086400",
                     "1e308", "-1e308", "NaN", "null", "[]", "."].map { Array($0.utf8) },
        seeds: {
            var seeds: [[UInt8]] = []
            let aud = realmID.hex
            for (i, type) in VaultMessageType.allCases.enumerated() {
                let scope = VaultScope.allCases.first { $0.allows(type) } ?? .status
                let claims = #"{"iss":"coffer-dev","sub":"user-1","aud":"\#(aud)","scope":"\#(scope.rawValue)","iat":1799999900,"exp":1800000100}"#
                let m = UInt8(i << 2)
                seeds.append([m | 1] + Array(#"{"alg":"ES256","kid":"k1"}"#.utf8) + [0] + Array(claims.utf8))
                seeds.append([m | 2] + Array(#"{"alg":"EdDSA","kid":"k2"}"#.utf8) + [0] + Array(claims.utf8))
                if let token = try? sign(header: #"{"alg":"ES256","kid":"k1"}"#, claims: claims, eddsa: false) {
                    seeds.append([m] + Array(token.utf8))
                }
            }
            let solo = #"{"iss":"solo","sub":"u","aud":["\#(aud)"],"scope":"recover","iat":1800000000,"exp":1800000060}"#
            if let token = try? signSolo(header: #"{"alg":"ES256"}"#, claims: solo) { seeds.append([0x10] + Array(token.utf8)) }
            seeds.append([0] + Array("not.a.jwt".utf8))
            return seeds
        },
        run: { data throws(FuzzFinding) in
            guard let mode = data.first else { return .rejected }
            let types = VaultMessageType.allCases
            let type = types[Int(mode >> 2) % types.count]
            let rest = Array(data.dropFirst())
            let tokenText: String
            switch mode & 3 {
            case 1, 2:
                let split = rest.firstIndex(of: 0) ?? rest.count
                let header = String(decoding: rest[..<split], as: UTF8.self)
                let claims = String(decoding: rest[min(split + 1, rest.count)...], as: UTF8.self)
                guard let signed = try? sign(header: header, claims: claims, eddsa: mode & 3 == 2) else { return .rejected }
                tokenText = signed
            default:
                tokenText = String(decoding: rest, as: UTF8.self)
            }
            let v: TokenVerifier
            do { v = try await verifier.value } catch { throw FuzzFinding("the fixture verifier did not start: \(error)") }
            let verified: VerifiedToken
            do { verified = try await v.verify(tokenText, for: type) } catch {
                guard error is TokenError else { throw FuzzFinding("verify threw something other than a TokenError: \(Swift.type(of: error))") }
                return .rejected
            }
            try recheck(tokenText, verified, type)
            return .accepted
        })

    /// The signed claims of an accepted token, read again independently of the verifier.
    private struct Claims: Decodable {
        var iss: String
        var sub: String
        var aud: Audience
        var scope: String
        var exp: Double
        var iat: Double
        enum Audience: Decodable {
            case one(String), many([String])
            init(from decoder: any Decoder) throws {
                let c = try decoder.singleValueContainer()
                if let s = try? c.decode(String.self) { self = .one(s) } else { self = .many(try c.decode([String].self)) }
            }
            var values: [String] { switch self { case .one(let s): [s]; case .many(let a): a } }
        }
    }

    private struct Header: Decodable {
        var alg: String
        var kid: String?
    }

    private static func recheck(_ token: String, _ verified: VerifiedToken, _ type: VaultMessageType) throws(FuzzFinding) {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let headerData = TokenVerifier.base64URL(parts[0]), let payload = TokenVerifier.base64URL(parts[1]),
              let header = try? JSONDecoder().decode(Header.self, from: headerData),
              let claims = try? JSONDecoder().decode(Claims.self, from: payload) else {
            throw FuzzFinding("an accepted token's header or claims do not read back")
        }
        let pinned: [String: String] = verified.tenant == "solo" ? ["s1": "ES256"] : ["k1": "ES256", "k2": "EdDSA"]
        let alg = header.kid.flatMap { pinned[$0] } ?? (pinned.count == 1 ? pinned.values.first : nil)
        guard header.alg == alg else { throw FuzzFinding("accepted alg \(header.alg) for a key pinned to \(alg ?? "nothing")") }
        guard claims.iss == verified.tenant, ["coffer-dev", "solo"].contains(claims.iss) else { throw FuzzFinding("accepted issuer is not the verified tenant") }
        guard claims.sub == verified.user, !claims.sub.isEmpty else { throw FuzzFinding("accepted subject is not the verified user") }
        guard claims.aud.values == [realmID.hex] else { throw FuzzFinding("accepted a token for another audience") }
        guard claims.scope == verified.scope.rawValue, verified.scope.allows(type) else { throw FuzzFinding("accepted scope \(claims.scope) for \(type)") }
        let lifetime = claims.exp - claims.iat
        guard lifetime > 0, lifetime <= Double(verified.scope.maxLifetimeSeconds) else { throw FuzzFinding("accepted a lifetime of \(lifetime) s") }
        guard now < claims.exp, claims.iat <= now + 60 else { throw FuzzFinding("accepted a token outside its validity (iat \(claims.iat), exp \(claims.exp))") }
    }

    static func b64url(_ data: some DataProtocol) -> String {
        Data(data).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    static func sign(header: String, claims: String, eddsa useEdDSA: Bool) throws -> String {
        let input = b64url(Data(header.utf8)) + "." + b64url(Data(claims.utf8))
        let signature = useEdDSA ? try eddsa.signature(for: Data(input.utf8)) : try es256.signature(for: Data(input.utf8)).rawRepresentation
        return input + "." + b64url(signature)
    }

    static func signSolo(header: String, claims: String) throws -> String {
        let input = b64url(Data(header.utf8)) + "." + b64url(Data(claims.utf8))
        return input + "." + b64url(try soloKey.signature(for: Data(input.utf8)).rawRepresentation)
    }
}
