#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Crypto

/// The 32-byte root backup key `K` of an account.
///
/// Generated on the device from the system CSPRNG. Users keep it as a 64-digit key (64 lowercase hex
/// digits, shown as 16 groups of 4) or in the vault behind a password. Never printed by
/// `description`; compare with ``constantTimeEquals(_:)``.
public struct BackupKey: Sendable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    public static let byteCount = 32

    /// The key bytes. Kept in a `SymmetricKey` so that they are zeroised when released.
    public let symmetricKey: SymmetricKey

    /// A new random key from the system CSPRNG.
    public init() {
        symmetricKey = SymmetricKey(size: .bits256)
    }

    /// A key from exactly 32 bytes.
    public init<D: DataProtocol>(bytes: D) throws(BackupKeyError) {
        guard bytes.count == Self.byteCount else { throw .wrongLength(bytes.count) }
        var copy = [UInt8](bytes)
        defer { for i in copy.indices { copy[i] = 0 } }
        symmetricKey = SymmetricKey(data: copy)
    }

    /// Parses the 64-digit form. Case is ignored, and so are spaces and dashes (including the
    /// Unicode spaces, tabs, line breaks and dash variants that copy-paste and phone keyboards bring).
    /// Any other character is rejected with the 1-based number of the digit it stands in place of
    /// (separators are not counted, so "digit 23" is the 23rd hex digit whatever the grouping); an
    /// invalid character is reported before a wrong digit count.
    public init(digits: String) throws(BackupKeyError) {
        var nibbles = [UInt8]()
        nibbles.reserveCapacity(64)
        // Best effort against key material lingering in freed memory.
        defer { for i in nibbles.indices { nibbles[i] = 0 } }
        for character in digits {
            if let n = Self.nibble(character) {
                nibbles.append(n)
            } else if !Self.isSeparator(character) {
                throw .invalidCharacter(digit: nibbles.count + 1)
            }
        }
        guard nibbles.count == 64 else { throw .wrongDigitCount(count: nibbles.count) }
        var bytes = [UInt8](repeating: 0, count: Self.byteCount)
        defer { for i in bytes.indices { bytes[i] = 0 } }
        for i in 0..<Self.byteCount { bytes[i] = nibbles[2 * i] << 4 | nibbles[2 * i + 1] }
        symmetricKey = SymmetricKey(data: bytes)
    }

    private static func nibble(_ c: Character) -> UInt8? {
        guard let a = c.asciiValue else { return nil }
        switch a {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return a - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return a - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return a - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    /// Whitespace (a `Character`, so "\r\n" counts once) and dashes: "-", U+2010...U+2015, U+2212.
    private static func isSeparator(_ c: Character) -> Bool {
        if c.isWhitespace { return true }
        return c.unicodeScalars.allSatisfy { s in
            s == "-" || (0x2010...0x2015).contains(s.value) || s.value == 0x2212
        }
    }

    /// The 64 lowercase hex digits, without separators.
    public var digits: String {
        symmetricKey.withUnsafeBytes { Hex.string($0) }
    }

    /// The 64 digits in 16 groups of 4, separated by spaces, as shown to users.
    public var groupedDigits: String {
        let d = Array(digits)
        return stride(from: 0, to: 64, by: 4).map { String(d[$0..<$0 + 4]) }.joined(separator: " ")
    }

    /// Calls `body` with the raw key bytes.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try symmetricKey.withUnsafeBytes(body)
    }

    /// Constant-time comparison.
    public func constantTimeEquals(_ other: BackupKey) -> Bool {
        symmetricKey == other.symmetricKey  // SymmetricKey's == is constant-time
    }

    /// " (group G)" for a digit number inside the 64 digits, shown in 16 groups of 4.
    static func groupNote(_ digit: Int) -> String {
        (1...64).contains(digit) ? " (group \((digit - 1) / 4 + 1))" : ""
    }

    public var description: String { "BackupKey(<redacted>)" }
    public var debugDescription: String { description }
    /// No children: `dump` and debuggers' reflection must not reach the key bytes.
    public var customMirror: Mirror { Mirror(self, children: [], displayStyle: .struct) }
}

/// Why a 64-digit key was not accepted: a ``Code``, a message, and where the mistake is. The same
/// model as the other libraries' errors. Never contains the key's digits.
public struct BackupKeyError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What kind of mistake this is: compare with `==` or switch with a `default:` (codes can be
    /// added in later versions without breaking callers).
    public struct Code: Sendable, Hashable, CaseIterable, CustomStringConvertible {
        private enum Base: String, Sendable, Hashable, CaseIterable { case invalidCharacter, wrongDigitCount, wrongLength }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// A character that is neither a hex digit nor a separator, standing where digit
        /// ``BackupKeyError/digit`` (1-based, separators not counted) would be.
        public static let invalidCharacter = Code(.invalidCharacter)
        /// Not 64 hex digits: ``BackupKeyError/count`` were given.
        public static let wrongDigitCount = Code(.wrongDigitCount)
        /// Key bytes that are not 32 bytes long: ``BackupKeyError/count`` were given.
        public static let wrongLength = Code(.wrongLength)

        public static var allCases: [Code] { Base.allCases.map(Code.init) }
        public var description: String { base.rawValue }
    }

    public var code: Code
    /// What is wrong and how to fix it.
    public var message: String
    /// With ``Code/invalidCharacter``: the 1-based digit position of the bad character.
    public var digit: Int?
    /// With ``Code/wrongDigitCount`` the number of digits, with ``Code/wrongLength`` of bytes.
    public var count: Int?

    public init(_ code: Code, message: String, digit: Int? = nil, count: Int? = nil) {
        self.code = code
        self.message = message
        self.digit = digit
        self.count = count
    }

    public var description: String { message }

    public static func invalidCharacter(digit: Int) -> BackupKeyError {
        BackupKeyError(.invalidCharacter,
                       message: "the 64-digit key has an invalid character where digit \(digit)\(BackupKey.groupNote(digit)) should be: only 0-9, a-f, spaces and dashes are allowed",
                       digit: digit)
    }

    public static func wrongDigitCount(count: Int) -> BackupKeyError {
        BackupKeyError(.wrongDigitCount, message: "the 64-digit key must have exactly 64 hex digits; this one has \(count)", count: count)
    }

    public static func wrongLength(_ n: Int) -> BackupKeyError {
        BackupKeyError(.wrongLength, message: "a backup key is 32 bytes, not \(n)", count: n)
    }
}
