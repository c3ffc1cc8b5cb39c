#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CofferCore
import Dispatch
import Synchronization
import CofferPosix

/// One blob as a run file stores it: the id, its pack (an ordinal into the run's pack table) and
/// the fields of its ``PackEntry``.
struct RunRecord: Sendable {
    var id: ChunkID
    var pack: UInt32
    var index: UInt32
    var uncompressedLength: UInt32
    var offset: UInt32
    var length: UInt32
    var type: UInt8
    var compression: UInt8

    init(_ e: PackEntry, pack: UInt32) {
        id = e.id
        self.pack = pack
        index = UInt32(e.index)
        uncompressedLength = UInt32(e.uncompressedLength)
        offset = UInt32(e.offset)
        length = UInt32(e.length)
        type = e.type.rawValue
        compression = e.compression.rawValue
    }

    init(id: ChunkID, pack: UInt32, index: UInt32, uncompressedLength: UInt32, offset: UInt32, length: UInt32,
         type: UInt8, compression: UInt8) {
        self.id = id; self.pack = pack; self.index = index; self.uncompressedLength = uncompressedLength
        self.offset = offset; self.length = length; self.type = type; self.compression = compression
    }

    var entry: PackEntry {
        PackEntry(index: Int(index), type: BlobType(rawValue: type) ?? .data, id: id,
                  compression: Compression(rawValue: compression) ?? .none,
                  uncompressedLength: Int(uncompressedLength), offset: Int(offset), length: Int(length))
    }
}

/// A pack as a run file lists it.
struct RunPack: Sendable {
    var id: ObjectID
    var salt: [UInt8]
    var length: UInt64
}

/// The four big-endian words of an id: what the bucket table, the filter and comparisons use.
struct IDWords: Comparable {
    var w0: UInt64, w1: UInt64, w2: UInt64, w3: UInt64

    init(_ id: ChunkID) {
        (w0, w1, w2, w3) = id.withUnsafeBytes { b in
            (UInt64(bigEndian: b.loadUnaligned(fromByteOffset: 0, as: UInt64.self)),
             UInt64(bigEndian: b.loadUnaligned(fromByteOffset: 8, as: UInt64.self)),
             UInt64(bigEndian: b.loadUnaligned(fromByteOffset: 16, as: UInt64.self)),
             UInt64(bigEndian: b.loadUnaligned(fromByteOffset: 24, as: UInt64.self)))
        }
    }

    init(_ m: MappedFile, _ offset: Int) {
        w0 = m.be64(offset); w1 = m.be64(offset + 8); w2 = m.be64(offset + 16); w3 = m.be64(offset + 24)
    }

    static func < (a: IDWords, b: IDWords) -> Bool { (a.w0, a.w1, a.w2, a.w3) < (b.w0, b.w1, b.w2, b.w3) }
}

/// The layout of a run file (little-endian; byte-level description in docs/ENGINE.md, "The device's
/// index cache"). A run holds the blobs of a set of index objects, sorted by id, with a bucket
/// table (2^b + 1 positions, by the id's top b bits, about 8 ids a bucket) and a blocked Bloom
/// filter (512-bit blocks, 12 bits per id, 7 probes): an absent id (new data, the common case in
/// a backup) is answered from the filter alone about 99 times in 100; a present one reads one
/// bucket entry and one or two 56-byte records, usually in one page.
enum RunFormat {
    static let magic: [UInt8] = Array("CFXR".utf8)
    static let version: UInt16 = 1
    static let headerSize = 128
    static let recordSize = 56
    static let packSize = 80
    static let blockSize = 64
    static let bitsPerID = 12
    static let probes = 7

    static func bucketBits(for n: Int) -> Int {
        var b = 0
        while b < 31 && (1 << b) * 8 < n { b += 1 }
        return b
    }

    static func filterBlocks(for n: Int) -> Int { max(1, (n * bitsPerID + 511) / 512) }

    @inline(__always) static func bucket(_ w: IDWords, bits: Int) -> Int {
        bits == 0 ? 0 : Int(truncatingIfNeeded: w.w0 >> UInt64(64 - bits))
    }

    @inline(__always) static func block(_ w: IDWords, blocks: Int) -> Int {
        Int(truncatingIfNeeded: w.w2.multipliedFullWidth(by: UInt64(blocks)).high)
    }

    /// Calls `body(byte, mask)` for each probe bit of `w` inside its block.
    @inline(__always) static func probeBits(_ w: IDWords, _ body: (Int, UInt8) -> Void) {
        var h = w.w3
        for _ in 0..<probes {
            let bit = Int(h & 511)
            body(bit >> 3, UInt8(1) << UInt8(bit & 7))
            h >>= 9
        }
    }
}

enum RunError: Error, CustomStringConvertible {
    case invalid(String)
    var description: String { if case .invalid(let s) = self { return s }; return "" }
}

/// Writes a run file from records delivered in order (by id, then pack id; duplicates of the same
/// id in the same pack are dropped). `bound` is at least the number of records.
enum RunWriter {
    static func write(path: String, repositoryID: [UInt8], covered: [ObjectID], superseded: [ObjectID],
                      packs: [RunPack], bound: Int, next: () -> RunRecord?) throws -> Int {
        let w: PrivateFileWriter
        do { w = try PrivateFileWriter(path: path) } catch { throw RunError.invalid(error.description) }
        let bucketBits = RunFormat.bucketBits(for: bound)
        let blocks = RunFormat.filterBlocks(for: bound)
        var buckets = [UInt32](repeating: 0, count: (1 << bucketBits) + 1)
        var filter = [UInt8](repeating: 0, count: blocks * RunFormat.blockSize)
        var ordinals: [UInt32] = []
        ordinals.reserveCapacity(bound)
        do {
            try w.append([UInt8](repeating: 0, count: RunFormat.headerSize))
            let offCovered = w.position
            for c in covered { try w.append(c.bytes) }
            let offSuperseded = w.position
            for s in superseded { try w.append(s.bytes) }
            let offPacks = w.position
            // Pack records are written with their list positions after the keys; reserve them.
            try w.append([UInt8](repeating: 0, count: packs.count * RunFormat.packSize))
            let offKeys = w.position
            var n = 0
            var prev: (IDWords, UInt32)? = nil
            var rec = [UInt8](repeating: 0, count: RunFormat.recordSize)
            var lastBucket = 0
            while let r = next() {
                let words = IDWords(r.id)
                if let (pw, pp) = prev {
                    if words < pw { throw RunError.invalid("records out of order") }
                    if words == pw && packs[Int(pp)].id == packs[Int(r.pack)].id { continue }
                }
                prev = (words, r.pack)
                guard n < bound else { throw RunError.invalid("more records than announced") }
                let b = RunFormat.bucket(words, bits: bucketBits)
                while lastBucket < b { lastBucket += 1; buckets[lastBucket] = UInt32(n) }
                let blk = RunFormat.block(words, blocks: blocks) * RunFormat.blockSize
                RunFormat.probeBits(words) { byte, mask in filter[blk + byte] |= mask }
                rec.withUnsafeMutableBytes { p in
                    r.id.withUnsafeBytes { p.copyMemory(from: $0) }
                    p.storeBytes(of: r.pack.littleEndian, toByteOffset: 32, as: UInt32.self)
                    p.storeBytes(of: r.index.littleEndian, toByteOffset: 36, as: UInt32.self)
                    p.storeBytes(of: r.uncompressedLength.littleEndian, toByteOffset: 40, as: UInt32.self)
                    p.storeBytes(of: r.offset.littleEndian, toByteOffset: 44, as: UInt32.self)
                    p.storeBytes(of: r.length.littleEndian, toByteOffset: 48, as: UInt32.self)
                    p[52] = r.type
                    p[53] = r.compression
                    p[54] = 0
                    p[55] = 0
                }
                try w.append(rec)
                ordinals.append(r.pack)
                n += 1
            }
            while lastBucket < buckets.count - 1 { lastBucket += 1; buckets[lastBucket] = UInt32(n) }
            // Each pack's list of record positions (a counting sort by pack).
            var starts = [UInt32](repeating: 0, count: packs.count + 1)
            for o in ordinals { starts[Int(o) + 1] += 1 }
            for i in 0..<packs.count { starts[i + 1] += starts[i] }
            var fill = starts
            var list = [UInt32](repeating: 0, count: n)
            for (pos, o) in ordinals.enumerated() {
                list[Int(fill[Int(o)])] = UInt32(pos)
                fill[Int(o)] += 1
            }
            ordinals = []
            let offList = w.position
            try w.append(list.withUnsafeBytes { Array($0) })  // little-endian hosts only (checked at open)
            list = []
            let offBuckets = w.position
            try w.append(buckets.withUnsafeBytes { Array($0) })
            let offFilter = w.position
            try w.append(filter)
            let end = w.position
            try w.flush()
            var packBytes = [UInt8](repeating: 0, count: packs.count * RunFormat.packSize)
            packBytes.withUnsafeMutableBytes { p in
                for (i, pk) in packs.enumerated() {
                    let o = i * RunFormat.packSize
                    pk.id.withUnsafeBytes { (p.baseAddress! + o).copyMemory(from: $0.baseAddress!, byteCount: 32) }
                    for (j, s) in pk.salt.prefix(32).enumerated() { p[o + 32 + j] = s }
                    p.storeBytes(of: pk.length.littleEndian, toByteOffset: o + 64, as: UInt64.self)
                    p.storeBytes(of: starts[i].littleEndian, toByteOffset: o + 72, as: UInt32.self)
                    p.storeBytes(of: (starts[i + 1] - starts[i]).littleEndian, toByteOffset: o + 76, as: UInt32.self)
                }
            }
            try w.write(packBytes, at: offPacks)
            var h = [UInt8](repeating: 0, count: RunFormat.headerSize)
            h.withUnsafeMutableBytes { p in
                for (i, m) in RunFormat.magic.enumerated() { p[i] = m }
                p.storeBytes(of: RunFormat.version.littleEndian, toByteOffset: 4, as: UInt16.self)
                for (i, b) in repositoryID.prefix(16).enumerated() { p[8 + i] = b }
                let fields: [Int] = [n, packs.count, covered.count, superseded.count, bucketBits, blocks,
                                     offCovered, offSuperseded, offPacks, offKeys, offList, offBuckets, offFilter]
                for (i, f) in fields.enumerated() { p.storeBytes(of: UInt64(f).littleEndian, toByteOffset: 24 + 8 * i, as: UInt64.self) }
            }
            try w.write(h, at: 0)
            try w.sync()
            return end
        } catch let e as PrivateFileWriter.Failure {
            throw RunError.invalid(e.description)
        }
    }
}

/// An open, verified run file.
final class IndexRun: @unchecked Sendable {
    let name: String
    let map: MappedFile
    let count: Int
    let packCount: Int
    let bucketBits: Int
    let blocks: Int
    let offPacks: Int, offKeys: Int, offList: Int, offBuckets: Int, offFilter: Int
    let covered: [ObjectID]
    let superseded: [ObjectID]
    let tag: [UInt8]

    /// Verifies the whole file against `tag` (from the authenticated manifest), then maps it.
    /// `verified`: the caller has just computed `expected` from the file itself (after writing it).
    init(path: String, name: String, tag expected: [UInt8], mac: DeviceCacheMAC, repositoryID: [UInt8], verified: Bool = false) throws {
        self.name = name
        if !verified {
            guard let t = RunTag.compute(path: path, mac: mac) else { throw RunError.invalid("cannot read \(path)") }
            guard constantTimeEqual(t, expected) else { throw RunError.invalid("\(name) fails its authentication tag") }
        }
        tag = expected
        map = try MappedFile(path: path)
        let m = map
        guard 1 == UInt32(1).littleEndian else { throw RunError.invalid("big-endian hosts are not supported by the index cache") }
        guard m.count >= RunFormat.headerSize, Array(m.slice(0, 4)) == RunFormat.magic, m.u32(4) & 0xffff == UInt32(RunFormat.version),
              Array(m.slice(8, 16)) == Array(repositoryID.prefix(16)) else { throw RunError.invalid("\(name): not a run of this repository") }
        func f(_ i: Int) -> Int { Int(truncatingIfNeeded: m.u64(24 + 8 * i)) }
        count = f(0); packCount = f(1)
        let nc = f(2), ns = f(3)
        bucketBits = f(4); blocks = f(5)
        let offCovered = f(6), offSuperseded = f(7)
        offPacks = f(8); offKeys = f(9); offList = f(10); offBuckets = f(11); offFilter = f(12)
        // Authentic, but still consistent before any offset is used.
        guard count >= 0, packCount >= 0, nc >= 0, ns >= 0, bucketBits >= 0, bucketBits <= 31, blocks >= 1,
              offCovered == RunFormat.headerSize, offSuperseded == offCovered + 32 * nc, offPacks == offSuperseded + 32 * ns,
              offKeys == offPacks + RunFormat.packSize * packCount, offList == offKeys + RunFormat.recordSize * count,
              offBuckets == offList + 4 * count, offFilter == offBuckets + 4 * ((1 << bucketBits) + 1),
              m.count == offFilter + RunFormat.blockSize * blocks else { throw RunError.invalid("\(name): inconsistent layout") }
        covered = (0..<nc).map { i in try! ObjectID(bytes: m.slice(offCovered + 32 * i, 32)) }
        superseded = (0..<ns).map { i in try! ObjectID(bytes: m.slice(offSuperseded + 32 * i, 32)) }
    }

    @inline(__always) func mayContain(_ w: IDWords) -> Bool {
        let blk = offFilter + RunFormat.block(w, blocks: blocks) * RunFormat.blockSize
        let base = map.base!
        var hit = true
        RunFormat.probeBits(w) { byte, mask in if base.load(fromByteOffset: blk + byte, as: UInt8.self) & mask == 0 { hit = false } }
        return hit
    }

    func packID(_ ordinal: Int) -> ObjectID { try! ObjectID(bytes: map.slice(offPacks + ordinal * RunFormat.packSize, 32)) }
    func packSalt(_ ordinal: Int) -> Data { Data(map.slice(offPacks + ordinal * RunFormat.packSize + 32, 32)) }
    func packLength(_ ordinal: Int) -> Int { Int(map.u64(offPacks + ordinal * RunFormat.packSize + 64)) }

    func record(_ i: Int) -> RunRecord {
        let o = offKeys + i * RunFormat.recordSize
        let b = map.base! + o
        return RunRecord(id: try! ChunkID(bytes: map.slice(o, 32)), pack: map.u32(o + 32), index: map.u32(o + 36),
                         uncompressedLength: map.u32(o + 40), offset: map.u32(o + 44), length: map.u32(o + 48),
                         type: b.load(fromByteOffset: 52, as: UInt8.self), compression: b.load(fromByteOffset: 53, as: UInt8.self))
    }

    /// The first record for `id` whose pack is not excluded.
    func find(_ id: ChunkID, excluded: [Bool]) -> RunRecord? {
        let w = IDWords(id)
        guard count > 0, mayContain(w) else { return nil }
        let b = RunFormat.bucket(w, bits: bucketBits)
        var i = Int(map.u32(offBuckets + 4 * b))
        let end = Int(map.u32(offBuckets + 4 * (b + 1)))
        while i < end {
            let k = IDWords(map, offKeys + i * RunFormat.recordSize)
            if w < k { return nil }
            if k == w {
                let o = Int(map.u32(offKeys + i * RunFormat.recordSize + 32))
                if o < packCount && (o >= excluded.count || !excluded[o]) { return record(i) }
            }
            i += 1
        }
        return nil
    }

    /// The entries of pack `ordinal`, in pack order.
    func entries(ofPack ordinal: Int) -> [PackEntry] {
        let o = offPacks + ordinal * RunFormat.packSize
        let start = Int(map.u32(o + 72)), n = Int(map.u32(o + 76))
        var out: [PackEntry] = []
        out.reserveCapacity(n)
        for j in 0..<n { out.append(record(Int(map.u32(offList + 4 * (start + j)))).entry) }
        out.sort { $0.index < $1.index }
        return out
    }

    func pack(_ ordinal: Int) -> IndexedPack {
        IndexedPack(id: packID(ordinal), salt: packSalt(ordinal), length: packLength(ordinal), entries: entries(ofPack: ordinal))
    }

    func runPack(_ ordinal: Int) -> RunPack {
        RunPack(id: packID(ordinal), salt: Array(map.slice(offPacks + ordinal * RunFormat.packSize + 32, 32)), length: UInt64(packLength(ordinal)))
    }
}

/// The tag of a run file: `HMAC(k, "CFXR tag" ‖ u64 length ‖ t_0 ‖ t_1 ‖ …)` where `t_i =
/// HMAC(k, u64 i ‖ segment i)` over 32 MiB segments, so both cores verify a large run at once.
enum RunTag {
    static let segment = 32 << 20

    static func compute(path: String, mac: DeviceCacheMAC) -> [UInt8]? {
        guard let size = Posix.size(path) else { return nil }
        let n = max(1, (size + segment - 1) / segment)
        let tags = Mutex([[UInt8]?](repeating: nil, count: n))
        DispatchQueue.concurrentPerform(iterations: n) { i in
            var s = mac.stream()
            s.update(withUnsafeBytes(of: UInt64(i).littleEndian) { Array($0) })
            let lo = i * segment, hi = min(size, lo + segment)
            guard Posix.stream(path, from: lo, to: hi, { s.update($0) }) == hi - lo else { return }
            let t = s.finalize()
            tags.withLock { $0[i] = t }
        }
        var all = mac.stream()
        all.update(Array("CFXR tag".utf8))
        all.update(withUnsafeBytes(of: UInt64(size).littleEndian) { Array($0) })
        for t in tags.withLock({ $0 }) {
            guard let t else { return nil }
            all.update(t)
        }
        return all.finalize()
    }
}
