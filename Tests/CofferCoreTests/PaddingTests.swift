#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Testing
@testable @_spi(Testing) import CofferCore

/// Padmé (PETS 2019) and the padding of packs and sealed objects.
@Suite struct PaddingTests {
    @Test func fixedValues() {
        // Worked by hand from the definition: E = ⌊log2 L⌋, S = ⌊log2 E⌋ + 1, clear the low E − S bits.
        let cases: [(Int, Int)] = [(0, 0), (1, 1), (2, 2), (3, 3), (9, 10), (100, 104), (1000, 1024),
                                   (1_000_000, 1_015_808), (8_400_000, 8_650_752), ((1 << 20) + 1, 1_081_344),
                                   (1 << 20, 1 << 20), (Int(UInt32.max), 1 << 32)]
        for (l, p) in cases { #expect(Padme.paddedLength(l) == p, "Padmé(\(l))") }
    }

    @Test func properties() {
        var rng = SeededRNG(seed: 6)
        for _ in 0..<20_000 {
            // Lengths spread over every magnitude up to 2^40.
            let bits = Int(rng.next() % 40) + 1
            let l = Int(rng.next() % (UInt64(1) << UInt64(bits)))
            let p = Padme.paddedLength(l)
            #expect(p >= l)
            #expect(Padme.paddedLength(p) == p, "idempotent")
            #expect(Padme.isPadded(p))
            if l >= 2 {
                let e = Int.bitWidth - 1 - l.leadingZeroBitCount
                let s = Int.bitWidth - e.leadingZeroBitCount
                // Only the top S bits may be set, and the result is the smallest such value ≥ L.
                #expect(p & ((1 << (e - s)) - 1) == 0 || (p >> e) > 1)
                #expect(p - l < 1 << (e - s))
                // Overhead below 2^-S ≤ 12.5 % from 16 bytes, ≤ 3.125 % from 64 KiB.
                if l >= 16 { #expect(Double(p - l) / Double(l) < 0.125) }
                if l >= 1 << 16 { #expect(Double(p - l) / Double(l) < 0.03125) }
            }
            // Monotone: a longer input never pads shorter.
            #expect(Padme.paddedLength(l + 1) >= p)
        }
        // Few buckets: lengths 2^20 ..< 2^21 (E = 20, S = 5) pad to the 32 multiples of 2^15 above
        // 2^20 (one of them 2^21 itself) and 2^20: 33 sizes, where no padding would allow 2^20.
        let sizes = Set(((1 << 20)..<(1 << 21)).lazy.filter { $0 % 512 == 0 || $0 % 512 == 1 }.map { Padme.paddedLength($0) })
        #expect(sizes.count == 33)
    }

    @Test func policyFloor() {
        let p = PaddingPolicy(scheme: .padme, floor: 1 << 20)
        #expect(p.paddedLength(0) == 1 << 20)
        #expect(p.paddedLength(10_000) == 1 << 20)
        #expect(p.paddedLength((1 << 20) + 1) == 1_081_344)
        #expect(PaddingPolicy.none.paddedLength(12_345) == 12_345)
        #expect(PaddingPolicy(scheme: .none, floor: 4096).floor == 0)
        #expect(PaddingPolicy(parameters: RepositoryParameters(padding: .padme, paddingFloor: 4096)).paddedLength(100) == 4096)
    }

    @Test func packsArePaddedInsideTheHeader() throws {
        var rng = SeededRNG(seed: 7)
        for floor in [0, 4096, 1 << 20] {
            for count in [0, 1, 3, 40] {
                let policy = PaddingPolicy(scheme: .padme, floor: floor)
                let w = PackWriter(keys: fixedKeys, compressionLevel: 1, expectedSize: 1 << 20, padding: policy)
                var plains: [[UInt8]] = []
                for _ in 0..<count {
                    let p = rng.bytes(Int(rng.next() % 5000) + 1)
                    plains.append(p)
                    try w.add(type: .data, id: fixedKeys.chunkID(of: p), plaintext: p, compress: false)
                }
                let unpadded = w.unpaddedLength
                let pack = w.finish()
                #expect(pack.bytes.count == policy.paddedLength(unpadded))
                #expect(pack.bytes.count >= floor)
                #expect(Padme.isPadded(pack.bytes.count) || pack.bytes.count == floor)
                let header = try PackHeader(pack: pack.bytes, keys: fixedKeys)
                #expect(header.paddingLength == pack.bytes.count - unpadded)
                #expect(header.entries.count == count)
                let opener = BlobOpener(keys: fixedKeys)
                for (e, p) in zip(header.entries, plains) {
                    #expect(try opener.open(blob: e, inPack: pack.bytes, salt: header.salt) == Data(p))
                }
            }
        }
    }

    @Test func paddedPackHeaderCanBeReadFromItsTail() throws {
        let w = PackWriter(keys: fixedKeys, padding: .padmeDefault)
        try w.add(type: .data, id: fixedKeys.chunkID(of: [1, 2, 3]), plaintext: [UInt8]([1, 2, 3]), compress: false)
        let pack = w.finish()
        #expect(pack.bytes.count == 1 << 20)
        // The header (and its padding) is most of the pack: the tail a reader needs is that long.
        let trailer = try PackTrailer(tail: pack.bytes)
        #expect(trailer.tailLength == pack.bytes.count - 19)
        let h = try PackHeader(tail: pack.bytes.suffix(trailer.tailLength), keys: fixedKeys, packLength: pack.bytes.count)
        #expect(h.entries.count == 1)
        // Non-zero padding (a writer bug or a forgery with the key) is rejected.
        var bad = pack.bytes
        bad[bad.count - 100] ^= 1
        #expect(throws: FormatError.self) { try PackHeader(pack: bad, keys: fixedKeys) }
    }

    @Test func sealedObjectsArePadded() throws {
        var rng = SeededRNG(seed: 8)
        for floor in [0, 1024, 1 << 20] {
            let policy = PaddingPolicy(scheme: .padme, floor: floor)
            for n in [0, 1, 100, 5000, 70_000] {
                for compress in [false, true] {
                    let plain = compress ? rng.compressible(n) : rng.bytes(n)
                    let sealed = SealedObject.seal(type: .index, plaintext: plain, keys: fixedKeys, compress: compress,
                                                   padding: policy)
                    #expect(sealed.count >= floor)
                    #expect(sealed.count == policy.paddedLength(sealed.count), "already a padded size")
                    #expect(try SealedObject.open(sealed, expecting: .index, keys: fixedKeys) == Data(plain))
                    let unpadded = SealedObject.seal(type: .index, plaintext: plain, keys: fixedKeys, compress: compress)
                    #expect(sealed.count == policy.paddedLength(unpadded.count))
                }
            }
        }
    }
}
