#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// 32 bytes held as four big-endian words: cheap to hash, compare and store by the million
/// (dictionary keys for every chunk of a repository), unlike `Data`.
@usableFromInline
struct Digest256: Hashable, Comparable, Sendable {
    @usableFromInline var w0: UInt64
    @usableFromInline var w1: UInt64
    @usableFromInline var w2: UInt64
    @usableFromInline var w3: UInt64

    @inlinable
    init(w0: UInt64, w1: UInt64, w2: UInt64, w3: UInt64) {
        self.w0 = w0; self.w1 = w1; self.w2 = w2; self.w3 = w3
    }

    /// `raw` must hold exactly 32 bytes.
    @inlinable
    init(_ raw: UnsafeRawBufferPointer) {
        precondition(raw.count == 32)
        w0 = UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
        w1 = UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
        w2 = UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 16, as: UInt64.self))
        w3 = UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 24, as: UInt64.self))
    }

    @inlinable
    func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        let t = (w0.bigEndian, w1.bigEndian, w2.bigEndian, w3.bigEndian)
        return try Swift.withUnsafeBytes(of: t) { try body($0) }
    }

    var bytes: [UInt8] { withUnsafeBytes { Array($0) } }

    /// Constant time: no early exit on the first differing word.
    @inlinable
    func constantTimeEquals(_ o: Digest256) -> Bool {
        ((w0 ^ o.w0) | (w1 ^ o.w1) | (w2 ^ o.w2) | (w3 ^ o.w3)) == 0
    }

    @inlinable
    static func < (a: Digest256, b: Digest256) -> Bool {
        (a.w0, a.w1, a.w2, a.w3) < (b.w0, b.w1, b.w2, b.w3)
    }

    var hex: String { withUnsafeBytes { Hex.string($0) } }

    init?(hex: String) {
        guard hex.utf8.count == 64, let b = Hex.bytes(hex) else { return nil }
        self = b.withUnsafeBytes { Digest256($0) }
    }
}
