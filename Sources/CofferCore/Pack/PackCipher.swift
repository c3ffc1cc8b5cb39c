#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Crypto

/// The keys of one pack: `packKey = HKDF-Expand(K_data, "coffer/v1/pack" ‖ salt, 32)` for blobs and
/// `headerKey = HKDF-Expand(K_pack-header, "coffer/v1/pack-header" ‖ salt, 32)` for the header.
struct PackCipher {
    let blobKey: SymmetricKey
    let headerKey: SymmetricKey

    init(keys: RepositoryKeys, salt: UnsafeRawBufferPointer) {
        blobKey = RepositoryKeys.expand(keys.dataKey, label: PackFormat.dataKeyLabel, salt: salt)
        headerKey = RepositoryKeys.expand(keys.packHeaderKey, label: PackFormat.headerKeyLabel, salt: salt)
    }

    /// AAD = format version (u16) ‖ type (u8) ‖ id (32) ‖ compression (u8) ‖ uncompressed length (u32).
    static func blobAAD(type: BlobType, id: ChunkID, compression: Compression, uncompressedLength: Int) -> [UInt8] {
        var w = ByteWriter(capacity: 40)
        w.u16(FormatVersion.current)
        w.u8(type.rawValue)
        id.withUnsafeBytes { w.raw($0) }
        w.u8(compression.rawValue)
        w.u32(UInt32(uncompressedLength))
        return w.bytes
    }
}
