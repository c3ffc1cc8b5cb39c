/// Why a repository config could not be opened or created: a ``Code``, a message that says what to
/// do, and the details of its code. Distinguishes a damaged repository from a key that does not open
/// it; no message ever suggests deleting or reinitialising anything. The same model as the other
/// libraries' errors (`BackupError`, `StorageError`, `VaultError`).
public struct ConfigError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What kind of failure this is: compare with `==` or switch with a `default:` (codes can be
    /// added in later versions without breaking callers).
    public struct Code: Sendable, Hashable, CaseIterable, CustomStringConvertible {
        private enum Base: String, Sendable, Hashable, CaseIterable { case damaged, unsupportedVersion, wrongKey, parameterOutOfBounds }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The config object is damaged: cut short, bad checksum, not a Coffer config, or malformed
        /// although its checksum holds (``ConfigError/reason``).
        public static let damaged = Code(.damaged)
        /// Written by a newer Coffer (format version ``ConfigError/foundVersion``); this build reads version 1.
        public static let unsupportedVersion = Code(.unsupportedVersion)
        /// The config is intact but this key does not open this repository.
        public static let wrongKey = Code(.wrongKey)
        /// A parameter lies outside the fixed bounds, or an unknown feature flag is set
        /// (``ConfigError/parameter``).
        public static let parameterOutOfBounds = Code(.parameterOutOfBounds)

        public static var allCases: [Code] { Base.allCases.map(Code.init) }
        public var description: String { base.rawValue }
    }

    /// A parameter outside its bounds: its name, its value and what is allowed.
    public struct Parameter: Sendable, Hashable {
        public var name: String
        public var value: Int
        public var allowed: String
    }

    public var code: Code
    /// What is wrong and what to do.
    public var message: String
    /// With ``Code/damaged``: what is wrong with the bytes.
    public var reason: String?
    /// With ``Code/unsupportedVersion``: the format version found.
    public var foundVersion: Int?
    /// With ``Code/parameterOutOfBounds``: which parameter.
    public var parameter: Parameter?

    private init(_ code: Code, message: String, reason: String? = nil, foundVersion: Int? = nil, parameter: Parameter? = nil) {
        self.code = code
        self.message = message
        self.reason = reason
        self.foundVersion = foundVersion
        self.parameter = parameter
    }

    /// The repository's bytes are bad, whatever the key.
    public static func damaged(reason: String) -> ConfigError {
        ConfigError(.damaged, message: "the repository config is damaged (\(reason)); restore it from a copy of the repository if you have one",
                    reason: reason)
    }

    /// Written by a newer Coffer.
    public static func unsupportedVersion(found: Int) -> ConfigError {
        ConfigError(.unsupportedVersion, message: "the repository uses format version \(found), which this version of Coffer cannot read; update Coffer",
                    foundVersion: found)
    }

    /// This key does not open this repository.
    public static let wrongKey = ConfigError(.wrongKey, message: "this backup key does not open this repository; check the 64-digit key or password")

    /// A parameter outside the fixed bounds.
    public static func parameterOutOfBounds(name: String, value: Int, allowed: String) -> ConfigError {
        ConfigError(.parameterOutOfBounds, message: "repository parameter \(name) is \(value), outside what Coffer allows (\(allowed))",
                    parameter: Parameter(name: name, value: value, allowed: allowed))
    }

    /// True for ``Code/damaged`` (the repository's bytes are bad, whatever the key).
    public var isDamage: Bool { code == .damaged }

    public var description: String { message }
}
