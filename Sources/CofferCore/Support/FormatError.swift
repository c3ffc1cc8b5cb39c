/// Why an object of the repository format could not be read or written.
///
/// Carries what failed and, when known, which object (``object``); never key material or
/// plaintext. Authentication failures say only that the key does not open the object or that it was
/// modified: never which.
public struct FormatError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Code: Sendable, Hashable {
        /// Shorter than its own structure requires (a cut-off upload or read).
        case truncated
        /// Structurally invalid: bad magic, impossible lengths, unknown enum values, bad padding.
        case malformed
        /// Written by a newer format version than this build understands.
        case unsupportedVersion
        /// The AEAD tag did not verify: wrong key, or the bytes were modified.
        case authenticationFailed
        /// Decrypted, but the plaintext does not hash to its chunk id (tampering by a key holder, or
        /// a blob of another repository).
        case idMismatch
        /// The compressed payload is invalid or does not inflate to exactly its declared length.
        case decompressionFailed
        /// A length beyond the format's fixed bounds.
        case tooLarge
        /// A sealed object of another type than the one asked for.
        case unexpectedType
    }

    public var code: Code
    /// What was being read, for example `pack 3fa1…` or `blob 12ab… in pack 3fa1…`, when known.
    public var object: String?
    /// What failed, in words.
    public var message: String

    public init(_ code: Code, _ message: String, object: String? = nil) {
        self.code = code
        self.message = message
        self.object = object
    }

    /// The same error with `object` set (the engine knows names the pure core does not).
    public func about(_ object: String) -> FormatError {
        var e = self
        e.object = self.object.map { "\($0) in \(object)" } ?? object
        return e
    }

    public var description: String {
        if let object { return "\(object): \(message)" }
        return message
    }

    static func authentication(_ what: String) -> FormatError {
        FormatError(.authenticationFailed,
                    "\(what) could not be decrypted: this key does not open it, or it was modified")
    }
}
