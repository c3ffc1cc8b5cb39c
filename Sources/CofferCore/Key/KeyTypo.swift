#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Crypto

/// A likely typing mistake in a 64-digit key, located against a repository's config.
///
/// Found by ``UnverifiedConfig/locateTypo(in:)``. Digit numbers are 1-based and count hex digits
/// only (never spaces or dashes), so "digit 23 (group 6)" is what a person reading a paper key in 16
/// groups of 4 looks for.
public struct KeyTypo: Sendable, Equatable, CustomStringConvertible {
    public enum Mistake: Sendable, Equatable {
        /// Digit `digit` was typed wrong; `correct` is the digit that authenticates the config.
        case substituted(digit: Int, correct: Character)
        /// Digits `digit` and `digit + 1` were typed in the wrong order; `correct` is the pair as it should read.
        case swapped(digit: Int, correct: String)
    }

    public let mistake: Mistake

    public var description: String {
        switch mistake {
        case .substituted(let digit, let correct):
            return "digit \(digit)\(BackupKey.groupNote(digit)) looks mistyped: did you mean \(correct)?"
        case .swapped(let digit, let correct):
            let g1 = (digit - 1) / 4 + 1, g2 = digit / 4 + 1
            let groups = g1 == g2 ? "group \(g1)" : "groups \(g1) and \(g2)"
            return "digits \(digit) and \(digit + 1) (\(groups)) look swapped: did you mean \(correct)?"
        }
    }
}

extension UnverifiedConfig {
    /// Tries every single-digit substitution (64 × 15) and every swap of two neighbouring digits (63)
    /// of `typed` against this config's tag, and returns the one that authenticates it.
    ///
    /// About a thousand HKDF and HMAC computations: a few milliseconds. Call it only after `typed` failed
    /// ``verify(with:)`` with ``ConfigError/wrongKey``: it answers `nil` when no single mistake explains
    /// the failure (another repository's key, or more than one mistake). The tag is compared in
    /// constant time for every candidate.
    public func locateTypo(in typed: BackupKey) -> KeyTypo? {
        var nibbles = [UInt8](repeating: 0, count: 64)
        var candidate = [UInt8](repeating: 0, count: BackupKey.byteCount)
        defer {
            for i in nibbles.indices { nibbles[i] = 0 }
            for i in candidate.indices { candidate[i] = 0 }
        }
        typed.withUnsafeBytes { raw in
            for (i, b) in raw.enumerated() {
                nibbles[2 * i] = b >> 4
                nibbles[2 * i + 1] = b & 0x0f
            }
        }
        func authenticates() -> Bool {
            for i in 0..<BackupKey.byteCount { candidate[i] = nibbles[2 * i] << 4 | nibbles[2 * i + 1] }
            let configKey = RepositoryKeys.derive(.config, from: SymmetricKey(data: candidate), repositoryID: repositoryID)
            return HMAC<SHA256>.isValidAuthenticationCode(tag, authenticating: body, using: configKey)
        }
        let hex = Array("0123456789abcdef")
        for position in 0..<64 {
            let typedNibble = nibbles[position]
            for replacement in UInt8(0)..<16 where replacement != typedNibble {
                nibbles[position] = replacement
                if authenticates() {
                    return KeyTypo(mistake: .substituted(digit: position + 1, correct: hex[Int(replacement)]))
                }
            }
            nibbles[position] = typedNibble
        }
        for position in 0..<63 where nibbles[position] != nibbles[position + 1] {
            nibbles.swapAt(position, position + 1)
            if authenticates() {
                let pair = String([hex[Int(nibbles[position])], hex[Int(nibbles[position + 1])]])
                return KeyTypo(mistake: .swapped(digit: position + 1, correct: pair))
            }
            nibbles.swapAt(position, position + 1)
        }
        return nil
    }
}
