import Testing
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
@testable import CofferCore

/// The package's one big-endian codec (ByteWriter, ByteReader), which the repository objects, the
/// vault's wire format and the realm's rows all use.
@Suite struct ByteCodecTests {
    @Test("every field round-trips, big-endian, over arrays, raw buffers and Data slices")
    func roundTrip() throws {
        var w = ByteWriter()
        w.u8(0xAB)
        w.u16(0x0102)
        w.u32(0x0304_0506)
        w.u64(0x0708_090A_0B0C_0D0E)
        w.i64(-2)
        w.lp16([1, 2, 3])
        w.lp16(Array("héllo".utf8))
        w.zeros(3)
        let expected: [UInt8] = [0xAB, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
                                 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE,
                                 0, 3, 1, 2, 3, 0, 6] + Array("héllo".utf8) + [0, 0, 0]
        #expect(w.bytes == expected)

        func check<B: RandomAccessCollection>(_ b: B) where B.Element == UInt8, B.Index == Int {
            var r = ByteReader(b)
            #expect(r.u8() == 0xAB)
            #expect(r.u16() == 0x0102)
            #expect(r.u32() == 0x0304_0506)
            #expect(r.u64() == 0x0708_090A_0B0C_0D0E)
            #expect(r.i64() == -2)
            #expect(r.lp16().map { Array($0) } == [1, 2, 3])
            #expect(r.lp16().map { String(decoding: Array($0), as: UTF8.self) } == "héllo")
            #expect(r.restIsZero())
            #expect(r.take(3).map { Array($0) } == [0, 0, 0])
            #expect(r.atEnd)
        }
        check(w.bytes)
        w.bytes.withUnsafeBytes { check($0) }
        // A Data slice whose indices do not start at 0.
        let data = Data([9, 9] + w.bytes)
        check(data[2...])
    }

    @Test("a read past the end returns nil and consumes nothing; a length prefix with too few bytes after it too")
    func truncationNeverTrapsOrMoves() {
        var r = ByteReader([UInt8]([0, 5, 1]))
        #expect(r.u32() == nil && r.offset == 0)
        #expect(r.u64() == nil && r.offset == 0)
        #expect(r.take(5) == nil && r.offset == 0)
        #expect(r.take(-1) == nil && r.offset == 0)
        #expect(r.lp16() == nil && r.offset == 0, "declares 5 bytes, 1 follows")
        #expect(r.i64() == nil && r.offset == 0)
        #expect(r.u16() == 5 && r.remaining == 1)
        #expect(!r.restIsZero())
        var empty = ByteReader([UInt8]())
        #expect(empty.u8() == nil && empty.atEnd)
    }
}
