import Testing
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
@testable @_spi(Testing) import CofferCore

/// Seeded random mutations (bit flips, truncations, splices, garbage) of valid objects: every parser
/// must reject them with an error, never trap, hang or accept modified bytes.
@Suite struct ParserRobustnessTests {
    func mutate(_ input: Data, _ rng: inout SeededRNG) -> Data {
        var b = [UInt8](input)
        switch Int.random(in: 0..<5, using: &rng) {
        case 0:  // flip 1-4 random bits
            for _ in 0..<Int.random(in: 1...4, using: &rng) where !b.isEmpty {
                b[Int.random(in: 0..<b.count, using: &rng)] ^= 1 << UInt8.random(in: 0...7, using: &rng)
            }
        case 1:  // truncate
            b = Array(b.prefix(Int.random(in: 0..<max(b.count, 1), using: &rng)))
        case 2:  // overwrite a run with random bytes
            if !b.isEmpty {
                let start = Int.random(in: 0..<b.count, using: &rng)
                let n = Int.random(in: 1...min(16, b.count - start), using: &rng)
                let junk = rng.bytes(n)
                for i in 0..<n { b[start + i] ^= junk[i] | 1 }
            }
        case 3:  // insert bytes
            let at = Int.random(in: 0...b.count, using: &rng)
            b.insert(contentsOf: rng.bytes(Int.random(in: 1...8, using: &rng)), at: at)
        default:  // garbage of a similar size
            b = rng.bytes(Int.random(in: 0...(b.count + 10), using: &rng))
        }
        return Data(b)
    }

    @Test func packsSealedObjectsAndConfigsRejectMutations() throws {
        var rng = SeededRNG(seed: 2024)
        let w = PackWriter(keys: fixedKeys)
        for i in 0..<5 {
            let p = i % 2 == 0 ? rng.compressible(2000) : rng.bytes(300)
            try w.add(type: .data, id: fixedKeys.chunkID(of: p), plaintext: p, compress: true)
        }
        let pack = w.finish()
        let sealed = SealedObject.seal(type: .index, plaintext: rng.compressible(3000), keys: fixedKeys)
        let config = try RepositoryConfig(repositoryID: fixedRepositoryID, parameters: .default).encoded(with: fixedKeys)
        let opener = BlobOpener(keys: fixedKeys)
        for _ in 0..<1500 {
            let m = mutate(pack.bytes, &rng)
            if m != pack.bytes {
                // The header may survive a mutation in the blob region; then some blob must fail.
                if let h = try? PackHeader(pack: m, keys: fixedKeys) {
                    var failures = 0
                    for e in h.entries where (try? opener.open(blob: e, inPack: m, salt: h.salt)) == nil { failures += 1 }
                    #expect(failures > 0, "mutated pack fully accepted")
                }
            }
            let s = mutate(sealed, &rng)
            if s != sealed { #expect(throws: FormatError.self) { try SealedObject.open(s, expecting: .index, keys: fixedKeys) } }
            let c = mutate(config, &rng)
            if c != config { #expect(throws: ConfigError.self) { try RepositoryConfig.open(c, key: fixedKey) } }
            // Blob bytes against a real entry.
            let e = pack.entries[Int.random(in: 0..<pack.entries.count, using: &rng)]
            let blob = Data(pack.bytes[e.range])
            let mb = mutate(blob, &rng)
            if mb != blob { #expect(throws: FormatError.self) { try opener.open(mb, entry: e, salt: pack.salt) } }
        }
        // Hostile entries (as a corrupt index might hold: any 32-bit values, which is all an index
        // or pack header can encode, so negative ones cannot occur) are rejected, not trapped on.
        var e = pack.entries[0]
        let top = Int(UInt32.max)
        for (offset, length) in [(top - 10, 100), (top, top), (0, top), (pack.bytes.count, 17), (pack.bytes.count - 5, 17)] {
            e.offset = offset; e.length = length
            #expect(throws: FormatError.self) { try opener.open(blob: e, inPack: pack.bytes, salt: pack.salt) }
        }
        e = pack.entries[0]; e.uncompressedLength = top
        #expect(throws: FormatError.self) { try opener.open(blob: e, inPack: pack.bytes, salt: pack.salt) }
        e = pack.entries[0]; e.index = top
        #expect(throws: FormatError.self) { try opener.open(blob: e, inPack: pack.bytes, salt: pack.salt) }
        #expect(throws: FormatError.self) { try opener.open(blob: pack.entries[0], inPack: pack.bytes, salt: Data([1])) }
    }
}
