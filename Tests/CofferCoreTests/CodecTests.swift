import Testing
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
@testable import CofferCore

/// The engines whose tests run here: zlib everywhere; libdeflate on Linux, where scripts/test installs
/// it (a missing libdeflate fails `engineInUse` instead of silently testing zlib twice).
let testedEngines: [DeflateEngine] = {
    #if os(Linux)
    return [.zlib, .libdeflate]
    #else
    return DeflateEngine.allCases.filter(\.isAvailable)
    #endif
}()

@Suite struct CodecTests {
    @Test("each engine is the one in use (no silent fallback where it should load)", arguments: testedEngines)
    func engineInUse(_ engine: DeflateEngine) {
        #expect(engine.isAvailable, "\(engine) cannot be loaded here (Debian: apt-get install libdeflate0)")
        #expect(Deflater(engine: engine).engine == engine)
        #expect(Inflater(engine: engine).engine == engine)
    }

    @Test("round trips, across engines too, and keeps only worthwhile compression", arguments: testedEngines)
    func roundTripsAndOnlyKeepsWorthwhileCompression(_ engine: DeflateEngine) throws {
        var rng = SeededRNG(seed: 7)
        let deflater = Deflater(level: 1, engine: engine)
        let inflater = Inflater(engine: engine)
        // What one engine writes, the other reads: the format is raw DEFLATE, not an engine's output.
        let otherInflaters = DeflateEngine.allCases.filter(\.isAvailable).map { Inflater(engine: $0) }
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
                for other in otherInflaters {
                    #expect(try c.withUnsafeBytes { try other.decompress($0, expectedLength: n) } == Data(input))
                }
            }
        }
        #expect(compressedCount > 50)
        #expect(deflater.compressed(rng.bytes(100_000)) == nil)
        #expect(deflater.compressed(rng.compressible(100_000)) != nil)
        #expect(deflater.compressed([UInt8](repeating: 0, count: 63)) == nil)
    }

    @Test("decompression is bounded by the declared length; trailing, truncated and corrupt input refused", arguments: testedEngines)
    func decompressionIsBoundedByDeclaredLength(_ engine: DeflateEngine) throws {
        let deflater = Deflater(engine: engine)
        let inflater = Inflater(engine: engine)
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
