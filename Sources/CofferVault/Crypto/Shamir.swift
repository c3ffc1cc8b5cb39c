#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Crypto

/// Shamir secret sharing over GF(2^8) modulo x^8 + x^4 + x^3 + x + 1 (0x11B), byte-wise.
///
/// Every byte of the secret has its own random polynomial (independent coefficients; a zero leading
/// coefficient is allowed, as it must be for uniform shares). Arithmetic on secret values is
/// bit-sliced: 32 bytes are held as 8 bit-planes and multiplied with AND/XOR only, so there are no
/// table look-ups indexed by secrets and no secret-dependent branches.
public enum Shamir {
    /// One share: the public x (from the vault configuration) and the share bytes.
    public struct Share: Sendable, Equatable {
        public let x: UInt8
        public let y: [UInt8]
        public init(x: UInt8, y: [UInt8]) {
            self.x = x
            self.y = y
        }
    }

    /// Splits `secret` into one share per x in `xs` so that any `threshold` of them recover it.
    /// - Throws: ``ShamirError`` for x = 0, duplicate x, or a threshold outside 1...xs.count.
    public static func split(_ secret: [UInt8], threshold: Int, xs: [UInt8]) throws(ShamirError) -> [Share] {
        try checkXs(xs)
        guard threshold >= 1, threshold <= xs.count else { throw .badThreshold }
        // coefficients[j] is the x^(j+1) coefficient vector; fresh random bytes per byte position.
        let coefficients: [[UInt8]] = (1..<threshold).map { _ in randomBytes(secret.count) }
        return xs.map { x in
            Share(x: x, y: evaluate(constant: secret, coefficients: coefficients, at: x))
        }
    }

    /// Evaluates the polynomial `constant + Σ coefficients[j] * x^(j+1)` (Horner).
    static func evaluate(constant: [UInt8], coefficients: [[UInt8]], at x: UInt8) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(constant.count)
        var start = 0
        let xPlanes = BitSliced.broadcast(x)
        while start < constant.count {
            let end = min(start + BitSliced.width, constant.count)
            var acc = BitSliced(zeroCount: end - start)
            for c in coefficients.reversed() {
                acc = acc.add(BitSliced(Array(c[start..<end])))
                acc = acc.multiply(xPlanes)
            }
            acc = acc.add(BitSliced(Array(constant[start..<end])))
            out.append(contentsOf: acc.bytes(count: end - start))
            start = end
        }
        return out
    }

    /// Recovers the secret from exactly the given shares (interpolation at 0). The caller picks the
    /// subset; any `threshold` valid shares of one split give the secret.
    /// - Throws: ``ShamirError`` for no shares, x = 0, duplicate x (checked before any inversion),
    ///   or shares of different lengths.
    public static func combine(_ shares: [Share]) throws(ShamirError) -> [UInt8] {
        guard let length = shares.first?.y.count else { throw .noShares }
        try checkXs(shares.map(\.x))
        guard shares.allSatisfy({ $0.y.count == length }) else { throw .lengthMismatch }
        // Lagrange basis at 0: λ_i = Π_{j≠i} x_j / (x_j + x_i). The x are public.
        let lambdas: [UInt8] = shares.indices.map { i in
            var num: UInt8 = 1, den: UInt8 = 1
            for j in shares.indices where j != i {
                num = GF256.multiply(num, shares[j].x)
                den = GF256.multiply(den, shares[j].x ^ shares[i].x)
            }
            return GF256.multiply(num, GF256.inverse(den))
        }
        var out = [UInt8]()
        out.reserveCapacity(length)
        var start = 0
        while start < length {
            let end = min(start + BitSliced.width, length)
            var acc = BitSliced(zeroCount: end - start)
            for (share, lambda) in zip(shares, lambdas) {
                acc = acc.add(BitSliced(Array(share.y[start..<end])).multiply(BitSliced.broadcast(lambda)))
            }
            out.append(contentsOf: acc.bytes(count: end - start))
            start = end
        }
        return out
    }

    static func checkXs(_ xs: [UInt8]) throws(ShamirError) {
        var seen = Set<UInt8>()
        for x in xs {
            guard x != 0 else { throw .zeroX }
            guard seen.insert(x).inserted else { throw .duplicateX(x) }
        }
    }

    static func randomBytes(_ n: Int) -> [UInt8] {
        guard n > 0 else { return [] }
        return SymmetricKey(size: SymmetricKeySize(bitCount: n * 8)).withUnsafeBytes { Array($0) }
    }
}

/// Why shares could not be made or combined.
public enum ShamirError: Error, Sendable, Equatable {
    case zeroX, duplicateX(UInt8), badThreshold, noShares, lengthMismatch
}

/// GF(2^8) mod 0x11B, constant time (masks, no tables, no branches on values).
public enum GF256 {
    /// a · b.
    @inline(__always)
    public static func multiply(_ a: UInt8, _ b: UInt8) -> UInt8 {
        var a = a, b = b, p: UInt8 = 0
        for _ in 0..<8 {
            p ^= a & (0 &- (b & 1))
            let carry = 0 &- (a >> 7)
            a = (a << 1) ^ (0x1B & carry)
            b >>= 1
        }
        return p
    }

    /// a^254 = a⁻¹ for a ≠ 0 (0 ↦ 0; callers reject 0 first).
    public static func inverse(_ a: UInt8) -> UInt8 {
        // 254 = 0b11111110: square-and-multiply with a fixed sequence.
        var result: UInt8 = 1
        var base = a
        for bit in 0..<8 {
            let square = multiply(base, base)
            if bit > 0 { result = multiply(result, base) }  // bit index is public, not the value
            base = square
        }
        return result
    }
}

/// Up to 32 bytes as 8 bit-planes: plane k holds bit k of byte i at bit i.
struct BitSliced {
    static let width = 32
    var planes: [UInt32]

    init(zeroCount: Int) { planes = [UInt32](repeating: 0, count: 8) }

    init(_ bytes: [UInt8]) {
        var p = [UInt32](repeating: 0, count: 8)
        for (i, b) in bytes.enumerated() {
            for k in 0..<8 { p[k] |= UInt32((b >> UInt8(k)) & 1) << UInt32(i) }
        }
        planes = p
    }

    private init(planes: [UInt32]) { self.planes = planes }

    /// Every lane holds `v`.
    static func broadcast(_ v: UInt8) -> BitSliced {
        BitSliced(planes: (0..<8).map { k in 0 &- UInt32((v >> UInt8(k)) & 1) })
    }

    func bytes(count: Int) -> [UInt8] {
        (0..<count).map { i in
            var b: UInt8 = 0
            for k in 0..<8 { b |= UInt8((planes[k] >> UInt32(i)) & 1) << UInt8(k) }
            return b
        }
    }

    func add(_ o: BitSliced) -> BitSliced {
        BitSliced(planes: (0..<8).map { planes[$0] ^ o.planes[$0] })
    }

    /// Lane-wise product: schoolbook on the planes, then reduce x^8 = x^4 + x^3 + x + 1.
    func multiply(_ o: BitSliced) -> BitSliced {
        var p = [UInt32](repeating: 0, count: 15)
        for i in 0..<8 {
            for j in 0..<8 { p[i + j] ^= planes[i] & o.planes[j] }
        }
        for k in stride(from: 14, through: 8, by: -1) {
            let v = p[k]
            p[k - 8] ^= v
            p[k - 7] ^= v
            p[k - 5] ^= v
            p[k - 4] ^= v
        }
        return BitSliced(planes: Array(p[0..<8]))
    }
}
