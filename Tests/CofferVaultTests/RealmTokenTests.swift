import CofferRealm
import CofferVault
import Crypto
import Foundation
import JWTKit
import Testing

/// Tokens the realm must refuse: nothing happens and no guess is spent.
@Suite("Realm token checks", .serialized)
struct RealmTokenTests {
    static func b64url(_ d: some DataProtocol) -> String {
        Data(d).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    /// A JWT signed by hand with P-256 (so tests control every header and claim byte).
    static func es256(_ key: P256.Signing.PrivateKey, header: String, claims: String) throws -> String {
        let input = b64url(Data(header.utf8)) + "." + b64url(Data(claims.utf8))
        let sig = try key.signature(for: Data(input.utf8))
        return input + "." + b64url(sig.rawRepresentation)
    }

    static func claims(iss: String, sub: String, aud: String, scope: String, iat: Double, exp: Double) -> String {
        #"{"iss":"\#(iss)","sub":"\#(sub)","aud":"\#(aud)","scope":"\#(scope)","iat":\#(iat),"exp":\#(exp)}"#
    }

    @Test("expired, foreign, other-realm, wrong-scope, too-long, none, HMAC and swapped-algorithm tokens are refused and spend no guess")
    func refusedTokens() async throws {
        let t = try await RealmTestCluster.start(count: 2)
        try await stopping(t) {
            let realm = t.realm(1)
            let reg = try await realm.register("dave")
            let pem = try String(contentsOf: t.cluster.layout.tenantKeyURL, encoding: .utf8)
            let devKey = try P256.Signing.PrivateKey(pemRepresentation: pem)
            let now = Date().timeIntervalSince1970
            let aud = realm.realmID.hex
            let user = "dave"
            let header = #"{"alg":"ES256","typ":"JWT"}"#
            let good = try Self.es256(devKey, header: header, claims: Self.claims(iss: "coffer-dev", sub: user, aud: aud, scope: "recover", iat: now, exp: now + 300))

            let otherKey = P256.Signing.PrivateKey()
            let hmac = JWTKeyCollection()
            await hmac.add(hmac: HMACKey(key: SymmetricKey(size: .bits256)), digestAlgorithm: .sha256)
            let hs256 = try await hmac.sign(RealmTokenClaims(tenant: "coffer-dev", user: user, realmID: realm.realmID, scope: .recover,
                                                              issuedAt: Date(), lifetime: 300))
            let noneToken = Self.b64url(Data(#"{"alg":"none"}"#.utf8)) + "." + Self.b64url(Data(Self.claims(iss: "coffer-dev", sub: user, aud: aud, scope: "recover", iat: now, exp: now + 300).utf8)) + "."

            let bad: [(String, String, RealmErrorCode)] = [
                ("expired", try Self.es256(devKey, header: header, claims: Self.claims(iss: "coffer-dev", sub: user, aud: aud, scope: "recover", iat: now - 7200, exp: now - 3600)), .badToken),
                ("unknown tenant", try Self.es256(devKey, header: header, claims: Self.claims(iss: "evil", sub: user, aud: aud, scope: "recover", iat: now, exp: now + 300)), .badToken),
                ("known tenant, foreign key", try Self.es256(otherKey, header: header, claims: Self.claims(iss: "coffer-dev", sub: user, aud: aud, scope: "recover", iat: now, exp: now + 300)), .badToken),
                ("another realm", try Self.es256(devKey, header: header, claims: Self.claims(iss: "coffer-dev", sub: user, aud: t.realm(2).realmID.hex, scope: "recover", iat: now, exp: now + 300)), .badToken),
                ("uppercase audience", try Self.es256(devKey, header: header, claims: Self.claims(iss: "coffer-dev", sub: user, aud: aud.uppercased(), scope: "recover", iat: now, exp: now + 300)), .badToken),
                ("status scope", try Self.es256(devKey, header: header, claims: Self.claims(iss: "coffer-dev", sub: user, aud: aud, scope: "status", iat: now, exp: now + 300)), .scopeNotAllowed),
                ("register scope", try Self.es256(devKey, header: header, claims: Self.claims(iss: "coffer-dev", sub: user, aud: aud, scope: "register", iat: now, exp: now + 300)), .scopeNotAllowed),
                ("lifetime over 24 h", try Self.es256(devKey, header: header, claims: Self.claims(iss: "coffer-dev", sub: user, aud: aud, scope: "recover", iat: now, exp: now + 25 * 3600)), .badToken),
                ("issued in the future", try Self.es256(devKey, header: header, claims: Self.claims(iss: "coffer-dev", sub: user, aud: aud, scope: "recover", iat: now + 600, exp: now + 900)), .badToken),
                ("alg none", noneToken, .badToken),
                ("HS256", hs256, .badToken),
                ("EdDSA header on an ES256 key", try Self.es256(devKey, header: #"{"alg":"EdDSA"}"#, claims: Self.claims(iss: "coffer-dev", sub: user, aud: aud, scope: "recover", iat: now, exp: now + 300)), .badToken),
                ("unknown kid", try Self.es256(devKey, header: #"{"alg":"ES256","kid":"nope"}"#, claims: Self.claims(iss: "coffer-dev", sub: user, aud: aud, scope: "recover", iat: now, exp: now + 300)), .badToken),
                ("garbage", "not.a.jwt", .badToken),
            ]
            for (name, token, code) in bad {
                // A fresh, valid ticket each time, so only the token can be the reason.
                let q = try await realm.q0(user)
                let blinded = try VaultOPRF.blind(rnd(16)).blindedElementBytes
                let a = try await realm.send(.q1(Q1Request(token: token, ticket: q.ticket, version: reg.version, blindedElement: blinded)))
                #expect(a == .error(RealmErrorAnswer(code: code)), "\(name): \(a)")
            }
            #expect(try await realm.attemptsLeft(user) == 10, "a refused token spent a guess")

            // The hand-made good token works (so the refusals above are about what was changed).
            let q = try await realm.q0(user)
            let ok = try await realm.send(.q1(Q1Request(token: good, ticket: q.ticket, version: reg.version, blindedElement: try VaultOPRF.blind(rnd(16)).blindedElementBytes)))
            guard case .q1(let answer) = ok else { Issue.record("good token refused: \(ok)"); return }
            #expect(answer.attemptsLeft == 9)

            // A register token valid for 10 minutes is accepted, one for 11 minutes is not.
            let reg11 = try Self.es256(devKey, header: header, claims: Self.claims(iss: "coffer-dev", sub: user, aud: aud, scope: "register", iat: now, exp: now + 660))
            #expect(try await realm.send(.r1(R1Request(token: reg11, blindedElement: try VaultOPRF.blind(rnd(8)).blindedElementBytes))) == .error(RealmErrorAnswer(code: .badToken)))
            let reg10 = try Self.es256(devKey, header: header, claims: Self.claims(iss: "coffer-dev", sub: user, aud: aud, scope: "register", iat: now, exp: now + 600))
            guard case .r1 = try await realm.send(.r1(R1Request(token: reg10, blindedElement: try VaultOPRF.blind(rnd(8)).blindedElementBytes))) else {
                Issue.record("a 10-minute register token was refused"); return
            }
        }
    }

    @Test("an EdDSA tenant key is accepted only with EdDSA tokens")
    func eddsaTenant() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-realm-eddsa-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let key = Curve25519.Signing.PrivateKey()
        let pem = "-----BEGIN PUBLIC KEY-----\n" + (Data([0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00]) + key.publicKey.rawRepresentation).base64EncodedString() + "\n-----END PUBLIC KEY-----\n"
        let (keys, config) = try RealmDirectory(dir).initialize(x: 1, tenants: [.init(id: "ed", keys: [.init(kid: "e1", alg: "EdDSA", publicKeyPEM: pem)])])
        let id = try RealmID(bytes: Array(keys.realmID))
        let verifier = try await TokenVerifier(config: config, realmID: id)
        let now = Date().timeIntervalSince1970
        let claims = Self.claims(iss: "ed", sub: "u", aud: id.hex, scope: "recover", iat: now, exp: now + 60)
        func sign(_ header: String) throws -> String {
            let input = Self.b64url(Data(header.utf8)) + "." + Self.b64url(Data(claims.utf8))
            return input + "." + Self.b64url(try key.signature(for: Data(input.utf8)))
        }
        let v = try await verifier.verify(try sign(#"{"alg":"EdDSA","kid":"e1"}"#), for: .q1)
        #expect(v == VerifiedToken(tenant: "ed", user: "u", scope: .recover))
        await #expect(throws: TokenError.algorithmNotAllowed) { _ = try await verifier.verify(try sign(#"{"alg":"ES256","kid":"e1"}"#), for: .q1) }
    }
}
