#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
@testable import CofferCore

/// Deterministic generator (SplitMix64) so property tests are reproducible from their seed.
struct SeededRNG: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func bytes(_ n: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: n)
        var i = 0
        while i < n {
            var w = next()
            for _ in 0..<8 where i < n {
                out[i] = UInt8(truncatingIfNeeded: w)
                w >>= 8
                i += 1
            }
        }
        return out
    }

    /// Text-like bytes that compress well (a small alphabet with runs).
    mutating func compressible(_ n: Int) -> [UInt8] {
        let words = ["hello ", "message ", "sqlite ", "coffer ", "backup ", "\u{0}\u{0}\u{0}\u{0}", "2026-11-29 "]
        var out = [UInt8]()
        out.reserveCapacity(n + 16)
        while out.count < n { out.append(contentsOf: words[Int(next() % UInt64(words.count))].utf8) }
        return Array(out.prefix(n))
    }
}

extension Data {
    init(hex: String) {
        self = Data(Hex.bytes(hex)!)
    }
    var hex: String { Hex.string(self) }
}

extension Array where Element == UInt8 {
    var hex: String { Hex.string(self) }
}

/// A fixed backup key for tests: bytes 00 01 02 … 1f.
let fixedKey = try! BackupKey(bytes: (0..<32).map { UInt8($0) })
let fixedRepositoryID = Data((0..<16).map { UInt8(0xa0 + $0) })
let fixedKeys = RepositoryKeys(key: fixedKey, repositoryID: fixedRepositoryID)
