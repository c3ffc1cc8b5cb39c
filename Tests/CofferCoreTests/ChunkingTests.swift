import Testing
@testable import CofferCore

@Suite struct ChunkingTests {
    func sqliteHeader(pageSizeField: UInt16) -> [UInt8] {
        var h = Array("SQLite format 3\0".utf8)
        h.append(UInt8(pageSizeField >> 8))
        h.append(UInt8(pageSizeField & 0xff))
        h.append(contentsOf: [UInt8](repeating: 1, count: 82))
        return h
    }

    @Test func detectsSQLite() {
        #expect(ChunkingPolicy.isSQLiteHeader(sqliteHeader(pageSizeField: 4096)))
        #expect(!ChunkingPolicy.isSQLiteHeader(Array("SQLite format 3".utf8)))  // no NUL
        #expect(!ChunkingPolicy.isSQLiteHeader(Array("SQLite format 4\0".utf8)))
        #expect(!ChunkingPolicy.isSQLiteHeader([UInt8]()))
        #expect(ChunkingPolicy.sqlitePageSize(sqliteHeader(pageSizeField: 1)) == 65536)
        #expect(ChunkingPolicy.sqlitePageSize(sqliteHeader(pageSizeField: 512)) == 512)
        #expect(ChunkingPolicy.sqlitePageSize(sqliteHeader(pageSizeField: 32768)) == 32768)
        for bad: UInt16 in [0, 2, 256, 1000, 4097, 0xffff] {
            #expect(ChunkingPolicy.sqlitePageSize(sqliteHeader(pageSizeField: bad)) == nil, "\(bad)")
        }
        // Header cut before the page size field.
        #expect(ChunkingPolicy.sqlitePageSize(Array(sqliteHeader(pageSizeField: 4096).prefix(17))) == nil)
    }

    @Test func choosesChunkSizes() {
        let p = ChunkingPolicy(fileChunkSize: 1 << 20, sqliteGroupSize: 1 << 16)
        #expect(p.plan(forFileStartingWith: sqliteHeader(pageSizeField: 4096)) == .init(kind: .sqlite(pageSize: 4096), chunkSize: 65536))
        #expect(p.chunkSize(forFileStartingWith: sqliteHeader(pageSizeField: 1)) == 65536)
        // A page larger than the group: one page per chunk.
        let small = ChunkingPolicy(fileChunkSize: 1 << 20, sqliteGroupSize: 1 << 14)
        #expect(small.chunkSize(forFileStartingWith: sqliteHeader(pageSizeField: 32768)) == 32768)
        #expect(small.chunkSize(forFileStartingWith: sqliteHeader(pageSizeField: 1)) == 65536)
        #expect(p.plan(forFileStartingWith: Array("JFIF....".utf8)) == .init(kind: .fixed, chunkSize: 1 << 20))
        #expect(p.plan(forFileStartingWith: sqliteHeader(pageSizeField: 1000)).kind == .fixed)
        #expect(ChunkingPolicy(parameters: .init(fileChunkSize: 4 << 20)).fileChunkSize == 4 << 20)
    }

    @Test func emptyAndExactFiles() {
        #expect(ChunkRanges(length: 0, chunkSize: 4096).isEmpty)
        #expect(Array(ChunkRanges(length: 4096, chunkSize: 4096)) == [0..<4096])
        #expect(Array(ChunkRanges(length: 4097, chunkSize: 4096)) == [0..<4096, 4096..<4097])
    }

    /// Property: for random page sizes, group sizes and file lengths, chunks are contiguous, cover the
    /// file exactly, start on page boundaries, and all but the last have the plan's size.
    @Test func propertyChunksCoverFilesOnPageBoundaries() {
        var rng = SeededRNG(seed: 0xC0FFEE)
        for _ in 0..<2000 {
            let page = 1 << Int.random(in: 9...16, using: &rng)
            let group = 1 << Int.random(in: 12...20, using: &rng)
            let policy = ChunkingPolicy(fileChunkSize: 64 << 10, sqliteGroupSize: group)
            let field: UInt16 = page == 65536 ? 1 : UInt16(page)
            let plan = policy.plan(forFileStartingWith: sqliteHeader(pageSizeField: field))
            #expect(plan.kind == .sqlite(pageSize: page))
            #expect(plan.chunkSize % page == 0 && plan.chunkSize >= group && plan.chunkSize >= page)
            let pages = Int.random(in: 0...300, using: &rng)
            // SQLite files are whole pages; also try a torn tail (a file being written).
            let length = pages * page + (Bool.random(using: &rng) ? 0 : Int.random(in: 0..<page, using: &rng))
            var next = 0
            for (i, r) in plan.chunkRanges(fileLength: length).enumerated() {
                #expect(r.lowerBound == next)
                #expect(r.lowerBound % page == 0)
                #expect(!r.isEmpty)
                if r.upperBound != length { #expect(r.count == plan.chunkSize, "chunk \(i)") }
                #expect(r.count <= plan.chunkSize)
                next = r.upperBound
            }
            #expect(next == length)
        }
    }
}
