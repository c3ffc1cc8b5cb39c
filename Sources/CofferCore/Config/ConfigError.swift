/// Why a repository config could not be opened or created. Distinguishes a damaged repository from
/// a key that does not open it; no case ever suggests deleting or reinitialising anything.
public enum ConfigError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The config object is damaged: cut short, bad checksum, not a Coffer config, or malformed
    /// although its checksum holds.
    case damaged(reason: String)
    /// Written by a newer Coffer (format version `found`); this build reads version 1.
    case unsupportedVersion(found: Int)
    /// The config is intact but this key does not open this repository.
    case wrongKey
    /// A parameter lies outside the fixed bounds, or an unknown feature flag is set.
    case parameterOutOfBounds(name: String, value: Int, allowed: String)

    /// True for ``damaged(reason:)`` (the repository's bytes are bad, whatever the key).
    public var isDamage: Bool {
        if case .damaged = self { return true }
        return false
    }

    public var description: String {
        switch self {
        case .damaged(let reason):
            return "the repository config is damaged (\(reason)); restore it from a copy of the repository if you have one"
        case .unsupportedVersion(let v):
            return "the repository uses format version \(v), which this version of Coffer cannot read; update Coffer"
        case .wrongKey:
            return "this backup key does not open this repository; check the 64-digit key or password"
        case .parameterOutOfBounds(let name, let value, let allowed):
            return "repository parameter \(name) is \(value), outside what Coffer allows (\(allowed))"
        }
    }
}
