import Foundation
import Testing
import Crypto
@testable import CryptoExtras
@testable import CofferVault
import CofferCore

func hex(_ s: String) -> [UInt8] { [UInt8](hexString: s)! }

func loadVector(_ name: String) throws -> [String: Any] {
    let url = try #require(Bundle.module.url(forResource: name, withExtension: "json", subdirectory: "Vectors"))
    return try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
}

/// RFC 9497 Appendix A.3.2, OPRF(P-384, SHA-384) in VOPRF mode (mode 1), test vectors 1 and 2.
///
/// What is covered: key import (skSm → pkSm), the blinded element for the RFC's fixed blind, the
/// evaluated element, the exact DLEQ proof for the RFC's fixed proof scalar, finalize (proof
/// verification + unblinding) → the RFC's output, and the unblinded PRF. The fixed blind and proof
/// scalar go through swift-crypto's internal entry points (`@testable import CryptoExtras`, debug
/// builds); the public API (random blind and proof) is checked against the same key and outputs.
@Suite struct RFC9497VectorTests {
    @Test func p384VOPRFVectors() throws {
        let v = try loadVector("rfc9497-p384-voprf")
        let sk = try P384._VOPRF.PrivateKey(rawRepresentation: hex(v["skSm"] as! String))
        #expect(Array(sk.publicKey.compressedRepresentation) == hex(v["pkSm"] as! String))
        let vectors = try #require(v["vectors"] as? [[String: String]])
        #expect(vectors.count == 2)
        for t in vectors {
            let input = hex(t["input"]!)
            let output = hex(t["output"]!)
            // Fixed blind (internal API).
            let blind = try P384._VOPRF.H2G.G.Scalar(bytes: Data(hex(t["blind"]!)))
            let blinded = try sk.publicKey.blind(input, with: blind)
            #expect(Array(blinded.blindedElement.oprfRepresentation) == hex(t["blindedElement"]!))
            // Fixed proof scalar (internal API): evaluation and proof exactly as published.
            let r = try P384._VOPRF.H2G.G.Scalar(bytes: Data(hex(t["proofRandomScalar"]!)))
            let evaluation = try sk.evaluate(blinded.blindedElement, using: r)
            #expect(Array(evaluation.evaluatedElement.oprfRepresentation) == hex(t["evaluationElement"]!))
            #expect(Array(evaluation.proof.rawRepresentation) == hex(t["proof"]!))
            // Our client wrapper verifies the published proof under pkSm and unblinds.
            let wrapped = BlindedInput(backing: blinded)
            #expect(try VaultOPRF.finalize(wrapped, evaluatedElement: hex(t["evaluationElement"]!), proof: hex(t["proof"]!),
                                           publicKey: hex(v["pkSm"] as! String)) == output)
            // Unblinded PRF (public API).
            #expect(Array(try sk.evaluate(input)) == output)
            // Public API with random blind and proof scalar: same output.
            let fresh = try VaultOPRF.blind(input)
            let (e, p) = try VaultOPRF.evaluate(blindedElement: fresh.blindedElementBytes, key: sk)
            #expect(try VaultOPRF.finalize(fresh, evaluatedElement: e, proof: p, publicKey: hex(v["pkSm"] as! String)) == output)
        }
    }

    @Test func aProofUnderAnotherKeyOrACorruptedElementIsRejected() throws {
        let key = VaultOPRF.generateKey(), other = VaultOPRF.generateKey()
        let blinded = try VaultOPRF.blind(Array("password-hash".utf8))
        let (e, p) = try VaultOPRF.evaluate(blindedElement: blinded.blindedElementBytes, key: key)
        #expect(throws: OPRFError.proofInvalid) {
            try VaultOPRF.finalize(blinded, evaluatedElement: e, proof: p, publicKey: VaultOPRF.publicKeyBytes(other))
        }
        // Another key's evaluation with its own valid proof, presented under the signed key: rejected.
        let (e2, p2) = try VaultOPRF.evaluate(blindedElement: blinded.blindedElementBytes, key: other)
        #expect(throws: OPRFError.proofInvalid) {
            try VaultOPRF.finalize(blinded, evaluatedElement: e2, proof: p2, publicKey: VaultOPRF.publicKeyBytes(key))
        }
        var flippedProof = p
        flippedProof[60] ^= 1
        #expect(throws: OPRFError.self) {
            try VaultOPRF.finalize(blinded, evaluatedElement: e, proof: flippedProof, publicKey: VaultOPRF.publicKeyBytes(key))
        }
    }

    @Test func theIdentityAndNonPointsAreRejected() throws {
        let key = VaultOPRF.generateKey()
        let blinded = try VaultOPRF.blind([1, 2, 3])
        let identityLike = [UInt8](repeating: 0, count: 49)
        #expect(throws: OPRFError.badEncoding) { try VaultOPRF.evaluate(blindedElement: identityLike, key: key) }
        #expect(throws: OPRFError.badEncoding) { try VaultOPRF.evaluate(blindedElement: [0x00], key: key) }
        #expect(throws: OPRFError.badEncoding) { try VaultOPRF.evaluate(blindedElement: [0x02] + [UInt8](repeating: 0xFF, count: 48), key: key) }
        let (_, p) = try VaultOPRF.evaluate(blindedElement: blinded.blindedElementBytes, key: key)
        #expect(throws: OPRFError.badEncoding) {
            try VaultOPRF.finalize(blinded, evaluatedElement: identityLike, proof: p, publicKey: VaultOPRF.publicKeyBytes(key))
        }
        #expect(throws: OPRFError.badEncoding) { try VaultOPRF.parsePublicKey(identityLike) }
    }
}

@Suite struct ShamirTests {
    let secret: [UInt8] = (0..<32).map { UInt8(($0 * 37 + 11) & 0xFF) }

    @Test func anyThresholdSubsetReconstructs() throws {
        let xs: [UInt8] = [1, 2, 3, 4, 5]
        let shares = try Shamir.split(secret, threshold: 3, xs: xs)
        for a in 0..<5 { for b in (a + 1)..<5 { for c in (b + 1)..<5 {
            #expect(try Shamir.combine([shares[a], shares[b], shares[c]]) == secret)
            #expect(try Shamir.combine([shares[c], shares[a], shares[b]]) == secret)
        } } }
        // More than t also reconstructs (they lie on the same polynomial).
        #expect(try Shamir.combine(shares) == secret)
    }

    @Test func fewerThanThresholdGiveNoCheckableInformation() throws {
        // With t-1 shares, every candidate secret is consistent: for any target secret there is a
        // polynomial through the two fixed shares. Check by completing the two shares with a third
        // point chosen to yield an arbitrary target, and seeing that the result varies freely.
        let shares = try Shamir.split(secret, threshold: 3, xs: [1, 2, 3, 4, 5])
        var seen = Set<[UInt8]>()
        for v in 0..<16 {
            let fake = Shamir.Share(x: 3, y: [UInt8](repeating: UInt8(v), count: 32))
            seen.insert(try Shamir.combine([shares[0], shares[1], fake]))
        }
        #expect(seen.count == 16)  // a different guess for share 3 gives a different, valid-looking secret
        // Shares of two different secrets at t-1 points look alike in distribution: each byte of a
        // share is uniform. A coarse check over many splits: byte 0 of share 1 takes many values.
        var values = Set<UInt8>()
        for _ in 0..<2000 { values.insert(try Shamir.split(secret, threshold: 3, xs: [1, 2, 3])[0].y[0]) }
        #expect(values.count > 245)  // expected ≈ 255.8 for uniform bytes
    }

    @Test func duplicateAndZeroXAreRejected() throws {
        let shares = try Shamir.split(secret, threshold: 3, xs: [1, 2, 3])
        #expect(throws: ShamirError.duplicateX(2)) { try Shamir.combine([shares[0], shares[1], shares[1]]) }
        #expect(throws: ShamirError.zeroX) { try Shamir.combine([shares[0], Shamir.Share(x: 0, y: secret), shares[2]]) }
        #expect(throws: ShamirError.zeroX) { try Shamir.split(secret, threshold: 2, xs: [0, 1]) }
        #expect(throws: ShamirError.duplicateX(1)) { try Shamir.split(secret, threshold: 2, xs: [1, 1]) }
        #expect(throws: ShamirError.badThreshold) { try Shamir.split(secret, threshold: 4, xs: [1, 2, 3]) }
        #expect(throws: ShamirError.noShares) { try Shamir.combine([]) }
    }

    @Test func fieldArithmeticMatchesTheAESField() {
        // FIPS-197 §4.2: {57} • {83} = {c1}; {57} • {13} = {fe}.
        #expect(GF256.multiply(0x57, 0x83) == 0xC1)
        #expect(GF256.multiply(0x57, 0x13) == 0xFE)
        for a in 1...255 {
            #expect(GF256.multiply(UInt8(a), GF256.inverse(UInt8(a))) == 1)
        }
        // The bit-sliced lane multiply agrees with the scalar one for every pair of byte values.
        let all = (0..<256).map { UInt8($0) }
        for b in 0..<256 {
            for chunk in stride(from: 0, to: 256, by: 32) {
                let lanes = Array(all[chunk..<chunk + 32])
                let product = BitSliced(lanes).multiply(BitSliced.broadcast(UInt8(b))).bytes(count: 32)
                #expect(product == lanes.map { GF256.multiply($0, UInt8(b)) })
            }
        }
    }

    @Test func sharesMatchTheIndependentVectors() throws {
        let v = try loadVector("vault-derivations")
        let coefficients = (v["shamirCoefficients"] as! [String]).map(hex)
        let s = hex(v["S"] as! String)
        let shares = v["shares"] as! [String: String]
        for (x, y) in shares {
            #expect(Shamir.evaluate(constant: s, coefficients: coefficients, at: UInt8(x)!) == hex(y))
        }
        let picked = ["1", "3", "5"].map { Shamir.Share(x: UInt8($0)!, y: hex(shares[$0]!)) }
        #expect(try Shamir.combine(picked) == s)
    }
}

/// Our own vectors (scripts/vault_vectors.py computes them with Python's hashlib/hmac and the
/// `cryptography` package, independently of this code). Published in docs/VAULT.md.
@Suite struct DerivationVectorTests {
    @Test func everyDerivationMatches() throws {
        let v = try loadVector("vault-derivations")
        func h(_ k: String) -> [UInt8] { hex(v[k] as! String) }
        let tenant = h("tenant"), user = h("user")
        let version = try RecordVersion(bytes: h("version"))
        let policy = try VaultPolicy(bytes: h("policy"))
        #expect(VaultDerivation.normalizedPassword(v["password"] as! String) == h("passwordNFC"))
        let salt = VaultDerivation.salt(version: version, tenant: tenant, user: user)
        #expect(salt == h("salt"))
        let stretched = try VaultDerivation.stretch(password: v["password"] as! String, salt: salt, policy: policy)
        #expect(stretched.withUnsafeBytes { Array($0) } == h("scrypt"))
        let realmID = try RealmID(bytes: h("realmID"))
        #expect(VaultDerivation.mask(rwd: h("rwd"), realmID: realmID) == h("mask"))
        let s = SymmetricKey(data: h("S"))
        let signing = VaultDerivation.recordSigningKey(secret: s)
        #expect(Array(signing.rawRepresentation) == h("recordSignSeed"))
        #expect(Array(signing.publicKey.rawRepresentation) == h("vk"))
        let share3 = hex((v["shares"] as! [String: String])["3"]!)
        #expect(VaultDerivation.xor(share3, h("mask")) == h("maskedShare"))
        let message = VaultDerivation.recordMessage(version: version, realmID: realmID, x: UInt8(v["x"] as! Int),
                                                    oprfPublicKey: h("oprfPublicKey"), maskedShare: h("maskedShare"), policy: policy)
        #expect(message == h("recordMessage"))
        #expect(VaultDerivation.verifyRecord(signature: h("recordSignature"), verificationKey: h("vk"), message: message))
        var badMessage = message
        badMessage[30] ^= 1
        #expect(!VaultDerivation.verifyRecord(signature: h("recordSignature"), verificationKey: h("vk"), message: badMessage))
        #expect(VaultDerivation.commitment(secret: s, version: version, policy: policy, n: v["n"] as! Int, t: v["t"] as! Int,
                                           verificationKey: h("vk"), tenant: tenant, user: user) == h("commitment"))
        let u = VaultDerivation.unlockKey(secret: s)
        #expect(u.withUnsafeBytes { Array($0) } == h("unlockKey"))
        let tag = VaultDerivation.unlockTag(unlockKey: u, realmID: realmID, version: version)
        #expect(tag == h("unlockTag"))
        let challenge = try Challenge(bytes: h("challenge"))
        #expect(VaultDerivation.unlockProof(tag: tag, realmID: realmID, version: version, challenge: challenge) == h("unlockProof"))
        #expect(VaultDerivation.verifyUnlockProof(h("unlockProof"), tag: tag, realmID: realmID, version: version, challenge: challenge))
        #expect(!VaultDerivation.verifyUnlockProof([UInt8](repeating: 0, count: 32), tag: tag, realmID: realmID, version: version, challenge: challenge))
        let w = try VaultDerivation.wrap(key: SymmetricKey(data: h("K")), secret: s, version: version, tenant: tenant, user: user,
                                         nonce: try AES.GCM.Nonce(data: h("wrapNonce")))
        #expect(w == h("W"))
        let k = try #require(VaultDerivation.unwrap(h("W"), secret: s, version: version, tenant: tenant, user: user))
        #expect(k.withUnsafeBytes { Array($0) } == h("K"))
        // W is bound to version, tenant and user.
        #expect(VaultDerivation.unwrap(h("W"), secret: s, version: .random(), tenant: tenant, user: user) == nil)
        #expect(VaultDerivation.unwrap(h("W"), secret: s, version: version, tenant: tenant, user: Array("mallory".utf8)) == nil)
    }
}
