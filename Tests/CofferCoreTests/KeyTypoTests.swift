import Testing
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
@testable import CofferCore

/// A key typed with one slip is located against the config: every single-digit substitution and
/// every swap of neighbouring digits, counted in digits (never separators).
@Suite struct KeyTypoTests {
    let hex = Array("0123456789abcdef")

    func config(for key: BackupKey) throws -> UnverifiedConfig {
        let c = try RepositoryConfig(repositoryID: fixedRepositoryID, parameters: .default)
        return try UnverifiedConfig(c.encoded(with: c.keys(for: key)))
    }

    @Test func locatesSubstitutionsAtTheEdgesOfGroups() throws {
        var rng = SeededRNG(seed: 23)
        let key = try BackupKey(bytes: rng.bytes(32))
        let config = try config(for: key)
        let right = Array(key.digits)
        // First and last digits, both edges of groups, with a random wrong digit in each.
        for position in [0, 1, 3, 4, 22, 31, 32, 47, 62, 63] {
            var typed = right
            var wrong = right[position]
            while wrong == right[position] { wrong = hex[Int(rng.next() % 16)] }
            typed[position] = wrong
            let found = config.locateTypo(in: try BackupKey(digits: String(typed)))
            #expect(found == KeyTypo(mistake: .substituted(digit: position + 1, correct: right[position])),
                    "digit \(position + 1)")
        }
    }

    @Test func locatesSwappedNeighbours() throws {
        // A key whose neighbours differ at 23/24 (and 4/5, across a group boundary).
        var rng = SeededRNG(seed: 5)
        let key = try BackupKey(bytes: rng.bytes(32))
        let config = try config(for: key)
        let right = Array(key.digits)
        for position in [22, 3, 62] where right[position] != right[position + 1] {
            var typed = right
            typed.swapAt(position, position + 1)
            let found = config.locateTypo(in: try BackupKey(digits: String(typed)))
            #expect(found == KeyTypo(mistake: .swapped(digit: position + 1, correct: String(right[position...position + 1]))))
        }
        let message = KeyTypo(mistake: .swapped(digit: 4, correct: "ab")).description
        #expect(message == "digits 4 and 5 (groups 1 and 2) look swapped: did you mean ab?")
    }

    @Test func saysDigitAndGroupInTheMessage() {
        let m = KeyTypo(mistake: .substituted(digit: 23, correct: "7")).description
        #expect(m == "digit 23 (group 6) looks mistyped: did you mean 7?")
    }

    @Test func findsNothingForAnotherKeyOrTwoSlips() throws {
        var rng = SeededRNG(seed: 9)
        let key = try BackupKey(bytes: rng.bytes(32))
        let config = try config(for: key)
        #expect(config.locateTypo(in: BackupKey()) == nil)
        var typed = Array(key.digits)
        typed[0] = typed[0] == "0" ? "1" : "0"
        typed[40] = typed[40] == "0" ? "1" : "0"
        #expect(config.locateTypo(in: try BackupKey(digits: String(typed))) == nil)
        // The right key is not a "typo" of itself: locateTypo is only asked after a failure, and
        // every candidate differs from what was typed.
        #expect(config.locateTypo(in: key) == nil)
    }
}
