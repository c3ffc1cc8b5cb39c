import Testing
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
@testable import CofferCore

@Suite struct CodecTests {
    @Test func roundTripsAndOnlyKeepsWorthwhileCompression() throws {
        var rng = SeededRNG(seed: 7)
        let deflater = Deflater(level: 1)
        let inflater = Inflater()
        var compressedCount = 0
        for i in 0..<300 {
            let n = Int.random(in: 0...(i < 250 ? 70_000 : 1_100_000), using: &rng)
            let compressible = Bool.random(using: &rng)
            let input = compressible ? rng.compressible(n) : rng.bytes(n)
            let c = deflater.compressed(input)
            if n >= 1000 { #expect((c != nil) == compressible, "n=\(n) compressible=\(compressible)") }
            if let c {
                compressedCount += 1
                #expect(c.count <= n - (n + 7) / 8, "kept a compression that saves less than 1/8")
                let back = try c.withUnsafeBytes { try inflater.decompress($0, expectedLength: n) }
                #expect(back == Data(input))
            }
        }
        #expect(compressedCount > 50)
        #expect(deflater.compressed(rng.bytes(100_000)) == nil)
        #expect(deflater.compressed(rng.compressible(100_000)) != nil)
        #expect(deflater.compressed([UInt8](repeating: 0, count: 63)) == nil)
    }

    @Test func decompressionIsBoundedByDeclaredLength() throws {
        let deflater = Deflater()
        let inflater = Inflater()
        // 16 MiB of zeros compress to ~16 KiB: a bomb if the declared length were not enforced.
        let bomb = try #require(deflater.compressed([UInt8](repeating: 0, count: 16 << 20)))
        #expect(bomb.count < 100_000)
        for declared in [1, 1000, (16 << 20) - 1, (16 << 20) + 1] {
            #expect(throws: FormatError.self) { try bomb.withUnsafeBytes { try inflater.decompress($0, expectedLength: declared) } }
        }
        let ok = try bomb.withUnsafeBytes { try inflater.decompress($0, expectedLength: 16 << 20) }
        #expect(ok.count == 16 << 20)
        // Trailing garbage, truncation and corruption are rejected; the inflater stays usable.
        let small = try #require(deflater.compressed(Array(repeating: Array("abcdefgh".utf8), count: 100).flatMap { $0 }))
        for bad in [small + [0], small.dropLast(), Data([0xff]) + small.dropFirst(), Data()] {
            #expect(throws: FormatError.self) { try bad.withUnsafeBytes { try inflater.decompress($0, expectedLength: 800) } }
        }
        #expect(try small.withUnsafeBytes { try inflater.decompress($0, expectedLength: 800) }.count == 800)
    }
}
