#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Crypto

/// The format version this build writes and reads.
public enum FormatVersion {
    public static let current: UInt16 = 1
}

/// The version of this Coffer build, as `coffer --version` prints it beside the format version.
public enum CofferVersion {
    public static let tool = "0.4.0"
    /// "coffer 0.4.0 (repository format 1, deflate: libdeflate)".
    public static var description: String {
        "coffer \(tool) (repository format \(FormatVersion.current), deflate: \(DeflateEngine.preferred.rawValue))"
    }
}

/// A repository's config: its id, format version and parameters.
///
/// Stored as `body ‖ HMAC-SHA256(K_config, body) ‖ SHA-256(body ‖ tag)` (docs/FORMAT.md, "Config").
/// Open in two steps, because the repository id salts the subkeys:
/// ```
/// let unverified = try UnverifiedConfig(bytes)          // damaged? unsupported version?
/// let keys = RepositoryKeys(key: k, repositoryID: unverified.repositoryID)
/// let config = try unverified.verify(with: keys)         // wrong key? parameters in bounds?
/// ```
/// or in one with ``open(_:key:)``.
public struct RepositoryConfig: Sendable, Hashable {
    public static let magic: [UInt8] = Array("COFFERCF".utf8)
    public static let repositoryIDLength = 16
    static let bodyLength = 50
    /// The config object's exact size in format version 1.
    public static let encodedLength = bodyLength + 32 + 32

    /// 16 random bytes naming the repository and salting its subkeys.
    public let repositoryID: Data
    public let formatVersion: UInt16
    public let parameters: RepositoryParameters
    /// Feature flags (docs/FORMAT.md, "Config"): only ``featureGenerationPrefix`` is defined.
    public let featureFlags: UInt32

    /// Feature flag bit 0: the repository's objects live under `gen/<repository id>/` instead of
    /// the storage's root (set by key rotation, whose commit point is replacing the root `config`).
    public static let featureGenerationPrefix: UInt32 = 1
    /// Every feature flag this build understands; a config with any other bit set is rejected.
    public static let knownFeatures: UInt32 = featureGenerationPrefix

    /// True when objects live under ``objectPrefix`` (`gen/<repository id>/`).
    public var usesGenerationPrefix: Bool { featureFlags & Self.featureGenerationPrefix != 0 }

    /// The prefix of every object name of this repository except `config`: `""` or `gen/<32 hex>/`.
    public var objectPrefix: String {
        usesGenerationPrefix ? Self.generationPrefix(repositoryID: repositoryID) : ""
    }

    /// `gen/<32 lowercase hex digits of the repository id>/`.
    public static func generationPrefix(repositoryID: Data) -> String {
        "gen/" + Hex.string(repositoryID) + "/"
    }

    /// A new config with a fresh random repository id.
    /// - Parameter featureFlags: ``featureGenerationPrefix`` for a generation made by key rotation.
    /// - Throws: ``ConfigError/parameterOutOfBounds(name:value:allowed:)``.
    public init(parameters: RepositoryParameters = .default, featureFlags: UInt32 = 0) throws(ConfigError) {
        var rng = SystemRandomNumberGenerator()
        let id = Data((0..<Self.repositoryIDLength).map { _ in UInt8.random(in: 0...255, using: &rng) })
        try self.init(repositoryID: id, parameters: parameters, featureFlags: featureFlags)
    }

    /// A config with a given repository id: a key rotation resuming its staged generation, tests
    /// and vectors. Never reuse an id for another repository (it salts every subkey).
    public init(repositoryID: Data, parameters: RepositoryParameters, featureFlags: UInt32 = 0) throws(ConfigError) {
        guard repositoryID.count == Self.repositoryIDLength else {
            throw .parameterOutOfBounds(name: "repository id length", value: repositoryID.count, allowed: "16")
        }
        guard featureFlags & ~Self.knownFeatures == 0 else {
            throw .parameterOutOfBounds(name: "feature flags", value: Int(featureFlags), allowed: "bit 0 (generation prefix) only")
        }
        try parameters.validate()
        self.repositoryID = repositoryID
        self.formatVersion = FormatVersion.current
        self.parameters = parameters
        self.featureFlags = featureFlags
    }

    /// The subkeys for this repository under `key`.
    public func keys(for key: BackupKey) -> RepositoryKeys {
        RepositoryKeys(key: key, repositoryID: repositoryID)
    }

    /// The config object's bytes, authenticated with `keys` (which must belong to this repository).
    public func encoded(with keys: RepositoryKeys) -> Data {
        precondition(keys.repositoryID == repositoryID, "keys of another repository")
        var w = ByteWriter(capacity: Self.encodedLength)
        w.raw(Self.magic)
        w.u16(formatVersion)
        w.raw(repositoryID)
        w.u32(featureFlags)
        w.u32(UInt32(parameters.fileChunkSize))
        w.u32(UInt32(parameters.sqliteGroupSize))
        w.u32(UInt32(parameters.targetPackSize))
        w.u8(parameters.compression.rawValue)
        w.u8(UInt8(parameters.compressionLevel))
        w.u8(parameters.padding.rawValue)
        w.u8(0)  // reserved
        w.u32(UInt32(parameters.paddingFloor))
        assert(w.bytes.count == Self.bodyLength)
        let tag = HMAC<SHA256>.authenticationCode(for: w.bytes, using: keys.configKey)
        w.raw(Array(tag))
        let sum = SHA256.hash(data: w.bytes)
        w.raw(Array(sum))
        return Data(w.bytes)
    }

    /// Opens a config with the root key in one step.
    /// - Returns: the verified config and the repository's subkeys.
    /// - Throws: ``ConfigError``: `.damaged`, `.unsupportedVersion`, `.wrongKey` or `.parameterOutOfBounds`.
    public static func open(_ bytes: some ContiguousBytes, key: BackupKey) throws(ConfigError)
        -> (config: RepositoryConfig, keys: RepositoryKeys)
    {
        let u = try UnverifiedConfig(bytes)
        let keys = RepositoryKeys(key: key, repositoryID: u.repositoryID)
        return (try u.verify(with: keys), keys)
    }
}

/// A config whose checksum and structure are good but whose tag is not yet checked: enough to read
/// the repository id, which the subkeys need.
public struct UnverifiedConfig: Sendable {
    public let repositoryID: Data
    public let formatVersion: UInt16
    let body: [UInt8]
    let tag: [UInt8]
    let featureFlags: UInt32
    let fields: (fileChunkSize: UInt32, sqliteGroupSize: UInt32, targetPackSize: UInt32,
                 compression: UInt8, compressionLevel: UInt8, padding: UInt8, reserved: UInt8, paddingFloor: UInt32)

    /// Checks length, checksum, magic and version, and parses the body.
    /// - Throws: ``ConfigError/damaged(reason:)`` or ``ConfigError/unsupportedVersion(found:)``.
    public init(_ bytes: some ContiguousBytes) throws(ConfigError) {
        let all: [UInt8] = bytes.withUnsafeBytes { Array($0) }
        // Smallest object whose version we could read: magic + version + tag + checksum.
        guard all.count >= RepositoryConfig.magic.count + 2 + 64 else {
            throw .damaged(reason: "truncated: \(all.count) bytes")
        }
        let checked = all[0..<(all.count - 32)]
        let sum = SHA256.hash(data: checked)
        let stored = all[(all.count - 32)...]
        guard stored.elementsEqual(sum) else { throw .damaged(reason: "checksum mismatch") }
        guard all.starts(with: RepositoryConfig.magic) else { throw .damaged(reason: "not a Coffer repository config") }
        var header = ByteReader(all)
        guard header.take(8) != nil, let version = header.u16() else { throw .damaged(reason: "truncated: \(all.count) bytes") }
        guard version == FormatVersion.current else { throw .unsupportedVersion(found: Int(version)) }
        guard all.count == RepositoryConfig.encodedLength else {
            throw .damaged(reason: "wrong length \(all.count) for format version 1")
        }
        body = Array(all[0..<RepositoryConfig.bodyLength])
        tag = Array(all[RepositoryConfig.bodyLength..<(RepositoryConfig.bodyLength + 32)])
        formatVersion = version
        var parsed: (Data, UInt32, (UInt32, UInt32, UInt32, UInt8, UInt8, UInt8, UInt8, UInt32))!
        body.withUnsafeBytes { raw in
            var r = ByteReader(raw)
            _ = r.bytes(8); _ = r.u16()
            let id = Data(r.bytes(16)!)
            let flags = r.u32()!
            parsed = (id, flags, (r.u32()!, r.u32()!, r.u32()!, r.u8()!, r.u8()!, r.u8()!, r.u8()!, r.u32()!))
        }
        repositoryID = parsed.0
        featureFlags = parsed.1
        fields = parsed.2
    }

    /// Checks the tag in constant time, then the parameters.
    /// - Throws: ``ConfigError/wrongKey`` when `keys` do not authenticate this config;
    ///   ``ConfigError/parameterOutOfBounds(name:value:allowed:)`` for bad parameters or unknown features.
    public func verify(with keys: RepositoryKeys) throws(ConfigError) -> RepositoryConfig {
        guard keys.repositoryID == repositoryID else { throw .wrongKey }
        // HMAC.isValidAuthenticationCode compares in constant time.
        guard HMAC<SHA256>.isValidAuthenticationCode(tag, authenticating: body, using: keys.configKey) else {
            throw .wrongKey
        }
        guard featureFlags & ~RepositoryConfig.knownFeatures == 0 else {
            throw .parameterOutOfBounds(name: "feature flags", value: Int(featureFlags), allowed: "bit 0 (generation prefix) only")
        }
        guard let compression = Compression(rawValue: fields.compression) else {
            throw .parameterOutOfBounds(name: "compression", value: Int(fields.compression), allowed: "0 (none) or 1 (deflate)")
        }
        guard let padding = PaddingScheme(rawValue: fields.padding) else {
            throw .parameterOutOfBounds(name: "padding scheme", value: Int(fields.padding), allowed: "0 (none) or 1 (padme)")
        }
        guard fields.reserved == 0 else {
            throw .parameterOutOfBounds(name: "reserved byte", value: Int(fields.reserved), allowed: "0")
        }
        let p = RepositoryParameters(
            fileChunkSize: Int(fields.fileChunkSize), sqliteGroupSize: Int(fields.sqliteGroupSize),
            targetPackSize: Int(fields.targetPackSize), compression: compression,
            compressionLevel: Int(fields.compressionLevel), padding: padding, paddingFloor: Int(fields.paddingFloor))
        return try RepositoryConfig(repositoryID: repositoryID, parameters: p, featureFlags: featureFlags)
    }
}
