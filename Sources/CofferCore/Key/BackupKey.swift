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
public struct BackupKey: Sendable, CustomStringConvertible, CustomDebugStringConvertible {
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
        symmetricKey = SymmetricKey(data: Data(bytes))
    }

    /// Parses the 64-digit form. Case, spaces and dashes are ignored (also tabs and newlines, which
    /// copy-paste brings); any other character is rejected with its 1-based position.
    public init(digits: String) throws(BackupKeyError) {
        var bytes = [UInt8]()
        bytes.reserveCapacity(Self.byteCount)
        var high: UInt8? = nil
        var count = 0
        for (offset, scalar) in digits.unicodeScalars.enumerated() {
            let nibble: UInt8
            switch scalar {
            case "0"..."9": nibble = UInt8(scalar.value - 48)
            case "a"..."f": nibble = UInt8(scalar.value - 97 + 10)
            case "A"..."F": nibble = UInt8(scalar.value - 65 + 10)
            case " ", "-", "\t", "\n", "\r": continue
            default: throw .invalidCharacter(position: offset + 1)
            }
            count += 1
            guard count <= 64 else { throw .wrongDigitCount(count: digits.unicodeScalars.filter { $0.properties.isASCIIHexDigit }.count) }
            if let h = high {
                bytes.append(h << 4 | nibble)
                high = nil
            } else {
                high = nibble
            }
        }
        guard count == 64 else { throw .wrongDigitCount(count: count) }
        symmetricKey = SymmetricKey(data: bytes)
    }

    /// The 64 lowercase hex digits, without separators.
    public var digits: String {
        symmetricKey.withUnsafeBytes { raw in
            let hex: [UInt8] = Array("0123456789abcdef".utf8)
            var out = [UInt8]()
            out.reserveCapacity(64)
            for b in raw {
                out.append(hex[Int(b >> 4)])
                out.append(hex[Int(b & 0x0f)])
            }
            return String(decoding: out, as: UTF8.self)
        }
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

    public var description: String { "BackupKey(<redacted>)" }
    public var debugDescription: String { description }
}

/// Why a 64-digit key was not accepted.
public enum BackupKeyError: Error, Sendable, Equatable, CustomStringConvertible {
    case invalidCharacter(position: Int)
    case wrongDigitCount(count: Int)
    case wrongLength(Int)

    public var description: String {
        switch self {
        case .invalidCharacter(let position):
            return "the 64-digit key has an invalid character at position \(position): only 0-9, a-f, spaces and dashes are allowed"
        case .wrongDigitCount(let count):
            return "the 64-digit key must have exactly 64 hex digits; this one has \(count)"
        case .wrongLength(let n):
            return "a backup key is 32 bytes, not \(n)"
        }
    }
}
