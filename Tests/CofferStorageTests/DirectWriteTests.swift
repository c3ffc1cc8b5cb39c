import CofferCore
import CofferPosix
import CofferStorage
import Foundation
import Testing

/// A folder repository writes block-aligned memory with O_DIRECT on Linux (from the pack buffer
/// straight to the disk) and everything else through the page cache; the bytes on disk are the same.
@Suite struct DirectWriteTests {
    /// Writes `count` random bytes that start `offset` bytes into a page-aligned block; returns
    /// what was written, what the file holds, and how many bytes went with O_DIRECT.
    func write(count: Int, offset: Int, in folder: String) throws -> (written: [UInt8], read: [UInt8], direct: Int) {
        let block = UnsafeMutableRawPointer.allocate(byteCount: count + offset, alignment: 4096)
        defer { block.deallocate() }
        let bytes = (0..<count).map { _ in UInt8.random(in: 0...255) }
        bytes.withUnsafeBytes { (block + offset).copyMemory(from: $0.baseAddress!, byteCount: count) }
        let path = folder + "/file"
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        try #require(fd >= 0)
        let outcome = LocalStorage.writeAll(fd, UnsafeRawBufferPointer(start: block + offset, count: count))
        #expect(outcome.errno == nil)
        #expect(Posix.fsync(fd) == 0)
        close(fd)
        let read = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        unlink(path)
        return (bytes, read, outcome.directBytes)
    }

    #if os(Linux)
    @Test func alignedMemoryGoesStraightToTheDisk() async throws {
        try await withTemporaryFolder { folder in
            // Three whole blocks with O_DIRECT, the last 123 bytes through the page cache.
            let r = try write(count: 3 * 4096 + 123, offset: 0, in: folder)
            #expect(r.read == r.written)
            #expect(r.direct == 3 * 4096, "the test folder's file system (\(folder)) must take O_DIRECT, as ext4, xfs and btrfs do")
        }
    }
    #endif

    @Test func unalignedMemoryGoesThroughThePageCache() async throws {
        try await withTemporaryFolder { folder in
            let r = try write(count: 3 * 4096, offset: 16, in: folder)
            #expect(r.read == r.written)
            #expect(r.direct == 0)
        }
    }

    @Test func aPackFromTheWriterIsStoredIntact() async throws {
        try await withTemporaryFolder { folder in
            let keys = RepositoryKeys(key: BackupKey(), repositoryID: Data(repeating: 7, count: 16))
            let w = PackWriter(keys: keys, expectedSize: 1 << 20, padding: .padmeDefault)
            for i in 0..<20 {
                let p = [UInt8](repeating: UInt8(i), count: 30_000)
                try w.add(type: .data, id: keys.chunkID(of: p), plaintext: p, compress: false)
            }
            let pack = w.finish()
            let storage = try LocalStorage(root: folder)
            let name = "data/" + pack.id.hex.prefix(2) + "/" + pack.id.hex
            try await storage.create(name, data: pack.bytes)
            let back = try await storage.get(name)
            #expect(back == pack.bytes)
            #expect(pack.id.verify(back))
        }
    }
}
