import Testing
import Foundation
@testable @_spi(Testing) import CofferCore
import Crypto

/// Checks the Swift implementation against vectors written by an independent Python implementation
/// of docs/FORMAT.md (Vectors/generate_vectors.py): every byte must agree, and every listed failure
/// must be reported with the listed error.
@Suite struct VectorTests {
    struct Vectors: Decodable {
        struct ChunkVector: Decodable { var plaintext: String; var id: String }
        struct Config: Decodable {
            var fileChunkSize, sqliteGroupSize, targetPackSize, compression, compressionLevel, padding, paddingFloor: Int
            var bytes: String
        }
        struct Blob: Decodable {
            var index, type, compression, uncompressedLength, offset, length: Int
            var plaintext, payload, id, aad, nonce, stored: String
            var salt: String?
            var packKey: String?
        }
        struct Pack: Decodable {
            var salt, packKey, headerKey, headerPlaintext, trailer, bytes, objectID: String
            var blobs: [Blob]
        }
        struct Sealed: Decodable {
            var type: Int
            var salt, objectKey, plaintext, bytes, objectID: String
            var compress: Bool
            var paddingScheme, paddingFloor, paddingLength: Int?
        }
        struct PaddedPack: Decodable {
            var salt, headerPlaintext, bytes, objectID: String
            var blobs: [Blob]
            var paddingScheme, paddingFloor, paddingLength: Int
        }
        struct Failure: Decodable {
            var object, description, key, bytes, error: String
            var entryIndex: Int?
            var expectType: Int?
        }
        var backupKey, repositoryID: String
        var subkeys: [String: String]
        var chunkIDs: [ChunkVector]
        var config: Config
        var blob: Blob
        var pack: Pack
        var sealedObjects: [Sealed]
        var padme: [[Int]]
        var paddedPacks: [PaddedPack]
        var paddedSealedObjects: [Sealed]
        var failures: [Failure]
    }

    static let vectors: Vectors = {
        let url = Bundle.module.url(forResource: "format-v1", withExtension: "json", subdirectory: "Vectors")!
        return try! JSONDecoder().decode(Vectors.self, from: Data(contentsOf: url))
    }()

    var v: Vectors { Self.vectors }
    var key: BackupKey { try! BackupKey(digits: v.backupKey) }
    var keys: RepositoryKeys { RepositoryKeys(key: key, repositoryID: Data(hex: v.repositoryID)) }

    func hex(_ k: SymmetricKey) -> String { k.withUnsafeBytes { Hex.string($0) } }

    @Test func keyDerivation() {
        #expect(v.backupKey == fixedKey.digits)
        let k = keys
        #expect(hex(k.chunkIDKey) == v.subkeys["chunk-id"])
        #expect(hex(k.dataKey) == v.subkeys["data"])
        #expect(hex(k.packHeaderKey) == v.subkeys["pack-header"])
        #expect(hex(k.metadataKey) == v.subkeys["metadata"])
        #expect(hex(k.configKey) == v.subkeys["config"])
        #expect(Set(v.subkeys.keys) == Set(RepositoryKeys.Purpose.allCases.map(\.rawValue)))
        let cipher = Data(hex: v.pack.salt).withUnsafeBytes { PackCipher(keys: k, salt: $0) }
        #expect(hex(cipher.blobKey) == v.pack.packKey)
        #expect(hex(cipher.headerKey) == v.pack.headerKey)
        let objectKey = Data(hex: v.sealedObjects[0].salt).withUnsafeBytes {
            RepositoryKeys.expand(k.metadataKey, label: SealedObject.keyLabel, salt: $0)
        }
        #expect(hex(objectKey) == v.sealedObjects[0].objectKey)
    }

    @Test func chunkIDs() {
        for c in v.chunkIDs {
            #expect(keys.chunkID(of: Data(hex: c.plaintext)).hex == c.id)
        }
    }

    @Test func config() throws {
        let p = RepositoryParameters(fileChunkSize: v.config.fileChunkSize, sqliteGroupSize: v.config.sqliteGroupSize,
                                     targetPackSize: v.config.targetPackSize,
                                     compression: Compression(rawValue: UInt8(v.config.compression))!,
                                     compressionLevel: v.config.compressionLevel,
                                     padding: PaddingScheme(rawValue: UInt8(v.config.padding))!,
                                     paddingFloor: v.config.paddingFloor)
        #expect(p == .default)
        let config = try RepositoryConfig(repositoryID: Data(hex: v.repositoryID), parameters: p)
        #expect(config.encoded(with: keys).hex == v.config.bytes)
        #expect(try RepositoryConfig.open(Data(hex: v.config.bytes), key: key).config == config)
    }

    @Test func singleBlob() throws {
        let b = v.blob
        let w = PackWriter(keys: keys, salt: Data(hex: b.salt!))
        let e = try w.add(type: BlobType(rawValue: UInt8(b.type))!, id: keys.chunkID(of: Data(hex: b.plaintext)),
                          plaintext: Data(hex: b.plaintext), compress: false)
        #expect(e.id.hex == b.id)
        #expect(PackCipher.blobAAD(type: e.type, id: e.id, compression: e.compression,
                                   uncompressedLength: e.uncompressedLength).hex == b.aad)
        let pack = w.finish()
        #expect(pack.bytes[e.range].hex == b.stored)
        #expect(try BlobOpener(keys: keys).open(Data(hex: b.stored), entry: e, salt: Data(hex: b.salt!)) == Data(hex: b.plaintext))
    }

    @Test func pack() throws {
        let p = v.pack
        // Encode: same salt and payloads (the compressed payloads come from the vector, since
        // DEFLATE output may differ between zlib builds) must give the same bytes.
        let w = PackWriter(keys: keys, salt: Data(hex: p.salt))
        for b in p.blobs {
            let payload = Data(hex: b.payload)
            _ = try payload.withUnsafeBytes {
                try w.add(type: BlobType(rawValue: UInt8(b.type))!, id: ChunkID(hex: b.id)!, payload: $0,
                          compression: Compression(rawValue: UInt8(b.compression))!,
                          uncompressedLength: b.uncompressedLength)
            }
        }
        let built = w.finish()
        #expect(built.bytes.hex == p.bytes)
        #expect(built.id.hex == p.objectID)
        // Decode.
        let bytes = Data(hex: p.bytes)
        let header = try PackHeader(pack: bytes, keys: keys)
        #expect(header.salt.hex == p.salt)
        #expect(header.entries.count == p.blobs.count)
        let opener = BlobOpener(keys: keys)
        for (e, b) in zip(header.entries, p.blobs) {
            #expect(e.offset == b.offset && e.length == b.length && e.id.hex == b.id && e.index == b.index)
            #expect(try opener.open(blob: e, inPack: bytes, salt: header.salt).hex == b.plaintext)
        }
        // Our own compression of the same plaintexts decodes to the same result too.
        let own = PackWriter(keys: keys, salt: Data(hex: p.salt))
        for b in p.blobs {
            try own.add(type: BlobType(rawValue: UInt8(b.type))!, id: ChunkID(hex: b.id)!, plaintext: Data(hex: b.plaintext), compress: true)
        }
        let ownPack = own.finish()
        #expect(ownPack.entries.map(\.compression.rawValue) == p.blobs.map { UInt8($0.compression) })
    }

    @Test func sealedObjects() throws {
        for s in v.sealedObjects {
            let type = SealedObjectType(rawValue: UInt8(s.type))
            #expect(try SealedObject.open(Data(hex: s.bytes), expecting: type, keys: keys).hex == s.plaintext)
            #expect(ObjectID(hashing: Data(hex: s.bytes)).hex == s.objectID)
            if !s.compress {
                let sealed = SealedObject.seal(type: type, plaintext: Data(hex: s.plaintext), keys: keys, compress: false,
                                               deflater: nil, salt: Data(hex: s.salt), paddingLength: 0)
                #expect(sealed.hex == s.bytes)
            }
        }
    }

    @Test func padme() {
        #expect(v.padme.count >= 10)
        for pair in v.padme { #expect(Padme.paddedLength(pair[0]) == pair[1], "Padmé(\(pair[0]))") }
    }

    /// Packs padded with scheme 1: the writer, given the same salt, payloads and policy, pads to the
    /// same size with the same bytes; the reader accepts them and reports the padding.
    @Test func paddedPacks() throws {
        #expect(v.paddedPacks.count >= 2)
        for p in v.paddedPacks {
            let policy = PaddingPolicy(scheme: PaddingScheme(rawValue: UInt8(p.paddingScheme))!, floor: p.paddingFloor)
            let w = PackWriter(keys: keys, salt: Data(hex: p.salt), padding: policy)
            for b in p.blobs {
                let payload = Data(hex: b.payload)
                _ = try payload.withUnsafeBytes {
                    try w.add(type: BlobType(rawValue: UInt8(b.type))!, id: ChunkID(hex: b.id)!, payload: $0,
                              compression: Compression(rawValue: UInt8(b.compression))!,
                              uncompressedLength: b.uncompressedLength)
                }
            }
            #expect(policy.paddedLength(w.unpaddedLength) == p.bytes.count / 2)
            let built = w.finish()
            #expect(built.bytes.hex == p.bytes)
            #expect(built.id.hex == p.objectID)
            let bytes = Data(hex: p.bytes)
            let header = try PackHeader(pack: bytes, keys: keys)
            #expect(header.paddingLength == p.paddingLength)
            let opener = BlobOpener(keys: keys)
            for (e, b) in zip(header.entries, p.blobs) {
                #expect(try opener.open(blob: e, inPack: bytes, salt: header.salt).hex == b.plaintext)
            }
        }
    }

    @Test func paddedSealedObjects() throws {
        #expect(v.paddedSealedObjects.count >= 2)
        for s in v.paddedSealedObjects {
            let type = SealedObjectType(rawValue: UInt8(s.type))
            let policy = PaddingPolicy(scheme: PaddingScheme(rawValue: UInt8(s.paddingScheme!))!, floor: s.paddingFloor!)
            #expect(try SealedObject.open(Data(hex: s.bytes), expecting: type, keys: keys).hex == s.plaintext)
            let sealed = SealedObject.seal(type: type, plaintext: Data(hex: s.plaintext), keys: keys, compress: s.compress,
                                           deflater: nil, salt: Data(hex: s.salt), padding: policy)
            #expect(sealed.hex == s.bytes)
            #expect(ObjectID(hashing: sealed).hex == s.objectID)
        }
    }

    @Test func expectedFailures() throws {
        #expect(v.failures.count >= 10)
        for f in v.failures {
            let k = try BackupKey(digits: f.key)
            let bytes = Data(hex: f.bytes)
            let keys = RepositoryKeys(key: k, repositoryID: Data(hex: v.repositoryID))
            let got: String
            do {
                switch f.object {
                case "config":
                    _ = try RepositoryConfig.open(bytes, key: k)
                    got = "accepted"
                case "packHeader":
                    _ = try PackHeader(pack: bytes, keys: keys)
                    got = "accepted"
                case "blob":
                    let h = try PackHeader(pack: bytes, keys: keys)
                    _ = try BlobOpener(keys: keys).open(blob: h.entries[f.entryIndex!], inPack: bytes, salt: h.salt)
                    got = "accepted"
                case "sealedObject":
                    _ = try SealedObject.open(bytes, expecting: SealedObjectType(rawValue: UInt8(f.expectType!)), keys: keys)
                    got = "accepted"
                default:
                    got = "unknown object kind \(f.object)"
                }
            } catch let e as ConfigError {
                got = "\(e.code)"
            } catch let e as FormatError {
                got = "\(e.code)"
            }
            #expect(got == f.error, "\(f.object): \(f.description)")
        }
    }
}
