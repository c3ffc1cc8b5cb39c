import Testing
import Foundation
@testable import CofferCore

/// Prints MB/s of the hot paths for a quick look (debug build unless run with `-c release`).
/// Asserts correctness only, never timing: speed is measured in the benchmark scripts.
/// `COFFER_FIGURES_MB` sets the amount processed per figure (default 32).
@Suite struct ThroughputFigures {
    static let megabytes = Int(ProcessInfo.processInfo.environment["COFFER_FIGURES_MB"] ?? "") ?? 32

    func measure(_ label: String, bytes: Int, _ body: () throws -> Void) rethrows {
        let clock = ContinuousClock()
        let elapsed = try clock.measure(body)
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let mbps = Double(bytes) / 1_048_576 / max(seconds, 1e-9)
        print("figure: \(label): \(Int(mbps)) MiB/s (\(bytes >> 20) MiB in \(String(format: "%.3f", seconds)) s)")
    }

    @Test func hotPaths() throws {
        var rng = SeededRNG(seed: 99)
        let chunk = rng.bytes(1 << 20)
        let dbChunk = rng.compressible(64 << 10)
        let n = Self.megabytes
        let keys = fixedKeys

        var last = keys.chunkID(of: chunk)
        measure("chunk id (HMAC-SHA256, 1 MiB chunks)", bytes: n << 20) {
            for _ in 0..<n { last = keys.chunkID(of: chunk) }
        }
        #expect(last == keys.chunkID(of: chunk))

        measure("object id (SHA-256, 1 MiB)", bytes: n << 20) {
            for _ in 0..<n { _ = ObjectID(hashing: chunk) }
        }

        let id = keys.chunkID(of: chunk)
        func writePacks(keep: Bool) throws -> [FinishedPack] {
            var packs: [FinishedPack] = []
            var w = PackWriter(keys: keys, expectedSize: 8 << 20)
            for i in 0..<n {
                try w.add(type: .data, id: id, plaintext: chunk, compress: false)
                if (i + 1) % 8 == 0 || i == n - 1 {
                    let p = w.finish()
                    if keep { packs.append(p) }  // else dropped, as after an upload
                    w = PackWriter(keys: keys, expectedSize: 8 << 20)
                }
            }
            return packs
        }
        // Packs are released after use (as the engine does after uploading), so memory is reused.
        try measure("pack write, 1 MiB media chunks (AES-256-GCM + copy + pack SHA-256)", bytes: n << 20) {
            _ = try writePacks(keep: false)
        }
        let packs = try writePacks(keep: true)

        let opener = BlobOpener(keys: keys)
        try measure("blob open, 1 MiB (AES-256-GCM + HMAC check)", bytes: n << 20) {
            for p in packs {
                for e in p.entries { _ = try opener.open(blob: e, inPack: p.bytes, salt: p.salt) }
            }
        }

        let dbID = keys.chunkID(of: dbChunk)
        let groups = (n << 20) / dbChunk.count
        var dbPack: FinishedPack?
        try measure("pack write, 64 KiB database groups, deflate level 1", bytes: groups * dbChunk.count) {
            let w = PackWriter(keys: keys, expectedSize: n << 20)
            for _ in 0..<groups { try w.add(type: .data, id: dbID, plaintext: dbChunk, compress: true) }
            dbPack = w.finish()
        }
        let p = try #require(dbPack)
        #expect(p.entries.allSatisfy { $0.compression == .deflate })
        try measure("blob open, 64 KiB database groups (inflate + checks)", bytes: groups * dbChunk.count) {
            for e in p.entries { _ = try opener.open(blob: e, inPack: p.bytes, salt: p.salt) }
        }
        let ratio = Double(p.bytes.count) / Double(groups * dbChunk.count)
        print("figure: compressed/original on the synthetic database text: \(String(format: "%.2f", ratio))")
    }
}
