#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Crypto

/// HMAC-SHA256 under a subkey kept for files the device writes for itself (the index cache): a
/// damaged, truncated or foreign cache file fails it. The subkey is
/// `HKDF-Expand(K_metadata, "coffer/v1/device-cache", 32)`, so it never equals a key that protects
/// repository objects, and the device cache of another repository (other id, other key) never verifies.
public struct DeviceCacheMAC: Sendable, CustomStringConvertible {
    let key: SymmetricKey

    public init(keys: RepositoryKeys) {
        key = RepositoryKeys.expand(keys.metadataKey, label: "coffer/v1/device-cache", salt: UnsafeRawBufferPointer(start: nil, count: 0))
    }

    /// The 32-byte tag of `bytes`.
    public func tag(_ bytes: UnsafeRawBufferPointer) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: bytes, using: key))
    }

    /// An incremental computation of a tag.
    public func stream() -> Stream { Stream(HMAC<SHA256>(key: key)) }

    public struct Stream {
        var h: HMAC<SHA256>
        init(_ h: HMAC<SHA256>) { self.h = h }
        public mutating func update(_ bytes: UnsafeRawBufferPointer) { h.update(data: bytes) }
        public mutating func update(_ bytes: [UInt8]) { bytes.withUnsafeBytes { h.update(data: $0) } }
        public func finalize() -> [UInt8] { Array(h.finalize()) }
    }


    public var description: String { "DeviceCacheMAC(<redacted>)" }
}
