import Testing
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
@testable @_spi(Testing) import CofferCore

@Suite struct SealedObjectTests {
    @Test func propertyRoundTrip() throws {
        var rng = SeededRNG(seed: 11)
        let deflater = Deflater(), inflater = Inflater()
        for i in 0..<200 {
            let n = Int.random(in: 0...(i % 10 == 0 ? 300_000 : 3000), using: &rng)
            let plain = Bool.random(using: &rng) ? rng.compressible(n) : rng.bytes(n)
            let type = SealedObjectType(rawValue: UInt8.random(in: 1...5, using: &rng))
            let sealed = SealedObject.seal(type: type, plaintext: plain, keys: fixedKeys,
                                           compress: Bool.random(using: &rng), deflater: deflater)
            #expect(SealedObject.peekType(sealed) == type)
            #expect(try SealedObject.open(sealed, expecting: type, keys: fixedKeys, inflater: inflater) == Data(plain))
        }
    }

    @Test func compressionHidesNothingAndShrinks() throws {
        var rng = SeededRNG(seed: 12)
        let text = rng.compressible(100_000)
        let small = SealedObject.seal(type: .index, plaintext: text, keys: fixedKeys, compress: true)
        let big = SealedObject.seal(type: .index, plaintext: text, keys: fixedKeys, compress: false)
        #expect(small.count < 50_000)
        #expect(big.count == 40 + 16 + 100_000 + 16)
        #expect(try SealedObject.open(small, expecting: .index, keys: fixedKeys) == Data(text))
    }

    @Test func everyFlippedByteIsDetected() throws {
        var rng = SeededRNG(seed: 13)
        let sealed = SealedObject.seal(type: .snapshot, plaintext: rng.compressible(400), keys: fixedKeys)
        for i in 0..<sealed.count {
            var b = sealed
            b[i] ^= UInt8(1 << (i % 8))
            do {
                _ = try SealedObject.open(b, expecting: .snapshot, keys: fixedKeys)
                Issue.record("flip at \(i) accepted")
            } catch {
                switch i {
                case 0..<4: #expect(error.code == .malformed)
                case 4..<6: #expect(error.code == .unsupportedVersion)
                case 7: #expect(error.code == .malformed)
                default: #expect(error.code == .authenticationFailed, "byte \(i): \(error)")
                }
            }
        }
    }

    @Test func wrongKeyTypeAndTruncation() throws {
        let sealed = SealedObject.seal(type: .index, plaintext: Array("index body".utf8), keys: fixedKeys)
        let other = RepositoryKeys(key: BackupKey(), repositoryID: fixedRepositoryID)
        do { _ = try SealedObject.open(sealed, expecting: .index, keys: other); Issue.record("wrong key accepted") } catch {
            #expect(error.code == .authenticationFailed)
            #expect(!error.description.contains("tag"))
        }
        // Same key, other repository id: other subkeys.
        let otherRepo = RepositoryKeys(key: fixedKey, repositoryID: Data(repeating: 0, count: 16))
        #expect(throws: FormatError.self) { try SealedObject.open(sealed, expecting: .index, keys: otherRepo) }
        do { _ = try SealedObject.open(sealed, expecting: .snapshot, keys: fixedKeys); Issue.record("type accepted") } catch {
            #expect(error.code == .unexpectedType)
        }
        // Relabelling the type in the clear prefix breaks the AAD.
        var relabelled = sealed; relabelled[6] = SealedObjectType.snapshot.rawValue
        do { _ = try SealedObject.open(relabelled, expecting: .snapshot, keys: fixedKeys); Issue.record("relabel accepted") } catch {
            #expect(error.code == .authenticationFailed)
        }
        for cut in [0, 10, 40, 71, sealed.count - 1] {
            #expect(throws: FormatError.self) { try SealedObject.open(sealed.prefix(cut), expecting: .index, keys: fixedKeys) }
        }
        #expect(throws: FormatError.self) { try SealedObject.open(sealed + [0], expecting: .index, keys: fixedKeys) }
    }

    @Test func declaredLengthIsBounded() throws {
        let plain = [UInt8](repeating: 0, count: 1 << 20)
        let sealed = SealedObject.seal(type: .index, plaintext: plain, keys: fixedKeys)
        do { _ = try SealedObject.open(sealed, expecting: .index, keys: fixedKeys, maxLength: 1000); Issue.record("accepted") } catch {
            #expect(error.code == .tooLarge)
        }
    }

    @Test func paddingRoundTrips() throws {
        let salt = Data(repeating: 7, count: 32)
        let sealed = SealedObject.seal(type: .tree, plaintext: Array("abc".utf8), keys: fixedKeys, compress: false,
                                       deflater: nil, salt: salt, paddingLength: 500)
        #expect(sealed.count == 40 + 16 + 3 + 500 + 16)
        #expect(try SealedObject.open(sealed, expecting: .tree, keys: fixedKeys) == Data("abc".utf8))
    }

    @Test func objectIDs() throws {
        let sealed = SealedObject.seal(type: .index, plaintext: [1, 2, 3] as [UInt8], keys: fixedKeys)
        let id = ObjectID(hashing: sealed)
        #expect(id.verify(sealed))
        var b = sealed; b[50] ^= 1
        #expect(!id.verify(b))
        #expect(ObjectID(hex: id.hex) == id)
        #expect(ObjectID(hex: id.hex.uppercased()) == id)
        #expect(ObjectID(hex: String(id.hex.dropLast())) == nil)
        #expect(ObjectID(hex: String(id.hex.dropLast()) + "g") == nil)
        #expect(try ObjectID(bytes: id.bytes) == id)
        #expect(throws: FormatError.self) { try ObjectID(bytes: [UInt8](repeating: 0, count: 31)) }
        let c = fixedKeys.chunkID(of: [1, 2, 3] as [UInt8])
        #expect(ChunkID(hex: c.hex) == c)
        #expect(try ChunkID(bytes: c.bytes) == c)
        #expect(c.constantTimeEquals(c))
        // Ordering follows the bytes.
        var rng = SeededRNG(seed: 14)
        let ids = (0..<200).map { _ in try! ChunkID(bytes: rng.bytes(32)) }
        #expect(ids.sorted().map(\.bytes) == ids.map(\.bytes).sorted { $0.lexicographicallyPrecedes($1) })
        #expect(Set(ids).count == 200)
    }
}
