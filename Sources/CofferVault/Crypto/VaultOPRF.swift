#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Crypto
import CryptoExtras

/// RFC 9497 VOPRF (mode 1), P384-SHA384, through swift-crypto's `P384._VOPRF`. Elements are 49-byte
/// compressed points (the identity has no such encoding, so it is always rejected); proofs 96 bytes.
public enum VaultOPRF {
    /// Client: blinds `input` (the scrypt output). Keep the result; send `blindedElementBytes`.
    public static func blind(_ input: [UInt8]) throws(OPRFError) -> BlindedInput {
        // The blinding step needs no key; swift-crypto hangs it off a public key type, and any
        // valid key gives the same result (the key is only used in finalize).
        do {
            let blinded = try anyPublicKey.blind(input)
            return BlindedInput(backing: blinded)
        } catch {
            throw .blindFailed
        }
    }

    /// Client: verifies the proof under `publicKey` (`pk_i`, 49 bytes) and unblinds: the PRF output
    /// (48 bytes, SHA-384).
    /// - Throws: ``OPRFError`` when an element or the key does not parse, or the proof fails.
    public static func finalize(_ blinded: BlindedInput, evaluatedElement: [UInt8], proof: [UInt8],
                                publicKey: [UInt8]) throws(OPRFError) -> [UInt8] {
        guard evaluatedElement.count == WireSize.element, proof.count == WireSize.proof else { throw .badEncoding }
        let pk = try parsePublicKey(publicKey)
        let evaluation: P384._VOPRF.BlindEvaluation
        do {
            evaluation = try P384._VOPRF.BlindEvaluation(rawRepresentation: evaluatedElement + proof)
        } catch {
            throw .badEncoding
        }
        do {
            return Array(try pk.finalize(blinded.backing, using: evaluation))
        } catch {
            throw .proofInvalid
        }
    }

    /// Parses a 49-byte compressed VOPRF public key.
    public static func parsePublicKey(_ bytes: [UInt8]) throws(OPRFError) -> P384._VOPRF.PublicKey {
        guard bytes.count == WireSize.element, bytes[0] == 0x02 || bytes[0] == 0x03 else { throw .badEncoding }
        do {
            return try P384._VOPRF.PublicKey(compressedRepresentation: bytes)
        } catch {
            throw .badEncoding
        }
    }

    /// Realm: a fresh VOPRF key for one registration.
    public static func generateKey() -> P384._VOPRF.PrivateKey {
        P384._VOPRF.PrivateKey(compactRepresentable: false)
    }

    /// The 49-byte compressed public key `pk_i` of `key`.
    public static func publicKeyBytes(_ key: P384._VOPRF.PrivateKey) -> [UInt8] {
        Array(key.publicKey.compressedRepresentation)
    }

    /// Realm: evaluates a 49-byte blinded element; returns (evaluated element 49, proof 96).
    /// - Throws: ``OPRFError/badEncoding`` for anything that is not a valid non-identity point.
    public static func evaluate(blindedElement: [UInt8], key: P384._VOPRF.PrivateKey) throws(OPRFError) -> (evaluatedElement: [UInt8], proof: [UInt8]) {
        guard blindedElement.count == WireSize.element, blindedElement[0] == 0x02 || blindedElement[0] == 0x03 else { throw .badEncoding }
        let element: P384._VOPRF.BlindedElement
        do { element = try P384._VOPRF.BlindedElement(oprfRepresentation: blindedElement) } catch { throw .badEncoding }
        do {
            let e = try key.evaluate(element)
            return (Array(e.evaluatedElement.oprfRepresentation), Array(e.proof.rawRepresentation))
        } catch {
            throw .evaluationFailed
        }
    }

    /// A fixed valid key used only to call `blind` (which does not depend on the key).
    nonisolated(unsafe) private static let anyPublicKey: P384._VOPRF.PublicKey = P384._VOPRF.PrivateKey(compactRepresentable: false).publicKey
}

/// A blinded input: the blinded element to send and the blind to keep (never sent).
public struct BlindedInput: @unchecked Sendable {
    // swift-crypto's type is not Sendable; it is immutable after creation.
    let backing: P384._VOPRF.BlindedInput
    init(backing: P384._VOPRF.BlindedInput) { self.backing = backing }
    /// The 49-byte blinded element to send.
    public var blindedElementBytes: [UInt8] { Array(backing.blindedElement.oprfRepresentation) }
}

/// A VOPRF step failed.
public enum OPRFError: Error, Sendable, Equatable {
    case badEncoding, proofInvalid, blindFailed, evaluationFailed
}
