#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Crypto

enum SHA256Digest {
    static func compute(_ raw: UnsafeRawBufferPointer) -> Digest256 {
        SHA256.hash(data: raw).withUnsafeBytes { Digest256($0) }
    }
}

enum HMACDigest {
    static func compute(_ raw: UnsafeRawBufferPointer, key: SymmetricKey) -> Digest256 {
        HMAC<SHA256>.authenticationCode(for: raw, using: key).withUnsafeBytes { Digest256($0) }
    }
}

/// The 12-byte AES-GCM nonce for a 96-bit big-endian counter value `n` (< 2^32 here).
func counterNonce(_ n: UInt32) -> AES.GCM.Nonce {
    var b = [UInt8](repeating: 0, count: 12)
    b[8] = UInt8(truncatingIfNeeded: n >> 24)
    b[9] = UInt8(truncatingIfNeeded: n >> 16)
    b[10] = UInt8(truncatingIfNeeded: n >> 8)
    b[11] = UInt8(truncatingIfNeeded: n)
    return try! AES.GCM.Nonce(data: b)  // 12 bytes is always a valid GCM nonce
}

/// Where sealed bytes go: a `Data` (sealed objects) or a pack's ``AlignedBuffer``.
protocol SealOutput {
    mutating func appendBytes(_ b: UnsafeRawBufferPointer)
}

extension Data: SealOutput {
    mutating func appendBytes(_ b: UnsafeRawBufferPointer) {
        guard let p = b.baseAddress else { return }
        append(p.assumingMemoryBound(to: UInt8.self), count: b.count)
    }
}

extension AlignedBuffer: SealOutput {
    mutating func appendBytes(_ b: UnsafeRawBufferPointer) { append(b) }
}

/// AES-256-GCM; appends `ciphertext ‖ tag` to `out`.
func aeadSeal(_ plaintext: UnsafeRawBufferPointer, key: SymmetricKey, nonce: AES.GCM.Nonce,
              aad: UnsafeRawBufferPointer, appendingTo out: inout some SealOutput) {
    // Sealing cannot fail for a 32-byte key, a 12-byte nonce and inputs under 64 GiB.
    let box = try! AES.GCM.seal(plaintext, using: key, nonce: nonce, authenticating: aad)
    box.ciphertext.withUnsafeBytes { out.appendBytes($0) }
    box.tag.withUnsafeBytes { out.appendBytes($0) }
}

/// Opens `ciphertext ‖ tag`; `nil` when the tag does not verify (for any reason).
func aeadOpen(_ sealed: UnsafeRawBufferPointer, key: SymmetricKey, nonce: AES.GCM.Nonce,
              aad: UnsafeRawBufferPointer) -> Data? {
    guard sealed.count >= 16 else { return nil }
    let ct = UnsafeRawBufferPointer(rebasing: sealed[0..<sealed.count - 16])
    let tag = UnsafeRawBufferPointer(rebasing: sealed[(sealed.count - 16)...])
    guard let box = try? AES.GCM.SealedBox(nonce: nonce, ciphertext: ct, tag: tag) else { return nil }
    return try? AES.GCM.open(box, using: key, authenticating: aad)
}
