import Testing
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
@testable import CofferCore

@Suite struct BackupKeyTests {
    let digits = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"

    @Test func parsesPlainDigits() throws {
        let k = try BackupKey(digits: digits)
        #expect(k.digits == digits)
        #expect(k.constantTimeEquals(fixedKey))
    }

    @Test func toleratesCaseSpacesAndDashes() throws {
        let grouped = try BackupKey(digits: digits).groupedDigits
        #expect(grouped.split(separator: " ").count == 16)
        #expect(try BackupKey(digits: grouped).constantTimeEquals(fixedKey))
        #expect(try BackupKey(digits: digits.uppercased()).constantTimeEquals(fixedKey))
        let dashed = grouped.replacingOccurrences(of: " ", with: "-")
        #expect(try BackupKey(digits: dashed).constantTimeEquals(fixedKey))
        #expect(try BackupKey(digits: "  " + grouped + "\n").constantTimeEquals(fixedKey))
    }

    @Test func rejectsBadCharacterWithItsDigitNumber() {
        var chars = Array(digits)
        chars[10] = "g"
        #expect(throws: BackupKeyError.invalidCharacter(digit: 11)) { try BackupKey(digits: String(chars)) }
        // Digits are counted, separators are not: "0001 x" has its "x" where digit 5 belongs.
        #expect(throws: BackupKeyError.invalidCharacter(digit: 5)) { try BackupKey(digits: "0001 x" + digits) }
        #expect(throws: BackupKeyError.invalidCharacter(digit: 5)) { try BackupKey(digits: "0 0 - 0 1\u{00A0}x" + digits) }
        #expect(throws: BackupKeyError.invalidCharacter(digit: 1)) { try BackupKey(digits: "é" + digits) }
        // A decomposed "é" (two scalars) is one character, standing where digit 2 belongs.
        #expect(throws: BackupKeyError.invalidCharacter(digit: 2)) { try BackupKey(digits: "0e\u{301}1" + digits) }
        // The invalid character wins over a wrong count, wherever it is.
        #expect(throws: BackupKeyError.invalidCharacter(digit: 66)) { try BackupKey(digits: digits + "0z") }
        #expect(throws: BackupKeyError.invalidCharacter(digit: 3)) { try BackupKey(digits: "01+2") }
        #expect(throws: BackupKeyError.invalidCharacter(digit: 2)) { try BackupKey(digits: "0_" + digits) }
        let grouped = Array(digits).enumerated().map { ($0.offset % 4 == 0 && $0.offset > 0 ? " " : "") + String($0.element) }.joined()
        var typed = Array(grouped)
        typed[27] = "?"  // "dddd dddd dddd dddd dddd dd?d": digit 23, group 6
        #expect(throws: BackupKeyError.invalidCharacter(digit: 23)) { try BackupKey(digits: String(typed)) }
        #expect("\(BackupKeyError.invalidCharacter(digit: 23))".contains("digit 23 (group 6)"))
    }

    @Test func toleratesCopyPasteSeparators() throws {
        let grouped = try BackupKey(digits: digits).groupedDigits
        for sep in ["\u{00A0}", "\u{2009}", "\u{2013}", "\u{2011}", "\r\n", "\t", " - "] {
            let text = grouped.replacingOccurrences(of: " ", with: sep)
            #expect(try BackupKey(digits: text).constantTimeEquals(fixedKey), "separator \(sep.unicodeScalars.map { $0.value })")
        }
    }

    @Test func rejectsWrongLength() {
        #expect(throws: BackupKeyError.wrongDigitCount(count: 63)) { try BackupKey(digits: String(digits.dropLast())) }
        #expect(throws: BackupKeyError.wrongDigitCount(count: 65)) { try BackupKey(digits: digits + "0") }
        #expect(throws: BackupKeyError.wrongDigitCount(count: 0)) { try BackupKey(digits: "") }
        #expect(throws: BackupKeyError.wrongLength(31)) { try BackupKey(bytes: [UInt8](repeating: 0, count: 31)) }
    }

    @Test func neverPrintsTheKey() throws {
        let k = try BackupKey(digits: digits)
        for text in [k.description, k.debugDescription, String(describing: k), String(reflecting: k), "\(k)",
                     fixedKeys.description, String(reflecting: fixedKeys)] {
            #expect(!text.contains("0a0b0c"))
            #expect(!text.lowercased().contains("0a0b 0c0d"))
        }
        #expect(Mirror(reflecting: k).children.isEmpty)
        var dumped = ""
        dump(k, to: &dumped)
        dump(fixedKeys, to: &dumped)
        #expect(!dumped.contains("0a0b0c") && !dumped.contains("10, 11, 12"))
        #expect(!"\(BackupKeyError.invalidCharacter(digit: 3))".contains("0a0b"))
    }

    @Test func randomKeysDiffer() {
        #expect(!BackupKey().constantTimeEquals(BackupKey()))
    }
}
