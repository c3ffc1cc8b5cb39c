import Testing
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
@testable @_spi(Testing) import CofferCore

/// The pack buffer that a folder repository writes with O_DIRECT: aligned, growing without losing
/// bytes, handed to a Data without a copy, and recycled for the next pack.
@Suite struct AlignedBufferTests {
    @Test func growsKeepsItsBytesAndStaysAligned() {
        let recycler = BufferRecycler(limit: 0)
        var rng = SeededRNG(seed: 7)
        var b = AlignedBuffer(capacity: 5000, recycler: recycler)
        var expected: [UInt8] = []
        for _ in 0..<40 {  // about 120 KB from a 5000-byte block: it doubles about five times
            let piece = rng.bytes(Int.random(in: 0...6000, using: &rng))
            piece.withUnsafeBytes { b.append($0) }
            expected += piece
            #expect(Int(bitPattern: b.bytes.baseAddress) % AlignedBuffer.alignment == 0)
        }
        #expect(Array(b.bytes) == expected)
        #expect(b.capacity >= expected.count && b.capacity > 5000, "the buffer grew")
        let data = b.takeData()
        #expect(Array(data) == expected)
        data.withUnsafeBytes { #expect(Int(bitPattern: $0.baseAddress) % AlignedBuffer.alignment == 0) }
    }

    @Test func aFreedPackIsTheNextPacksBuffer() {
        let recycler = BufferRecycler(limit: 1)
        var first = AlignedBuffer(capacity: 64 << 10, recycler: recycler)
        [UInt8](repeating: 1, count: 100).withUnsafeBytes { first.append($0) }
        var data: Data? = first.takeData()
        let address = data!.withUnsafeBytes { Int(bitPattern: $0.baseAddress) }
        #expect(recycler.count == 0)
        data = nil  // the upload is done with the pack
        #expect(recycler.count == 1)
        let second = AlignedBuffer(capacity: 40 << 10, recycler: recycler)
        #expect(Int(bitPattern: second.bytes.baseAddress) == address)
        #expect(second.bytes.isEmpty)  // a reused block starts empty
        #expect(recycler.count == 0)
        // Too small a request for the kept block (under half its size) gets a new allocation.
        second.deallocate()
        let third = AlignedBuffer(capacity: 8 << 10, recycler: recycler)
        #expect(Int(bitPattern: third.bytes.baseAddress) != address)
        #expect(recycler.count == 1)
        // At the limit, a freed block is released instead of kept; drain releases the rest.
        third.deallocate()
        #expect(recycler.count == 1)
        recycler.drain()
        #expect(recycler.count == 0)
    }

    @Test func aPaddedPackIsAlignedInAddressAndLength() throws {
        var rng = SeededRNG(seed: 9)
        let w = PackWriter(keys: fixedKeys, expectedSize: 2 << 20, padding: .padmeDefault)
        for _ in 0..<50 {
            let p = rng.bytes(Int.random(in: 1...40_000, using: &rng))
            try w.add(type: .data, id: fixedKeys.chunkID(of: p), plaintext: p, compress: false)
        }
        let pack = w.finish()
        // Every padded pack is at least 1 MiB and a Padmé length, which is a multiple of 32 KiB
        // from 1 MiB on: LocalStorage writes all of it with O_DIRECT.
        #expect(pack.bytes.count >= 1 << 20)
        #expect(pack.bytes.count % AlignedBuffer.alignment == 0)
        pack.bytes.withUnsafeBytes { #expect(Int(bitPattern: $0.baseAddress) % AlignedBuffer.alignment == 0) }
        #expect(pack.id == ObjectID(hashing: pack.bytes))
        let header = try PackHeader(pack: pack.bytes, keys: fixedKeys)
        #expect(header.entries == pack.entries)
    }
}
