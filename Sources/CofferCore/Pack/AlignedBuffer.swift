#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Synchronization

/// The bytes of a pack being built: one allocation aligned to ``alignment`` bytes that grows by
/// doubling, handed to a `Data` without a copy when the pack is finished.
///
/// Why aligned: a folder repository on Linux writes a pack whose address and length are multiples
/// of the block size with `O_DIRECT` (LocalStorage), from this memory to the disk without a copy
/// into the page cache. Measured on the 2-core machine: 450 packs of 2 MiB written and fsync-ed one
/// after another took 4.0-5.3 s and 2.9-4.1 CPU-s through the page cache, 1.1-1.2 s and 0.25 CPU-s
/// with `O_DIRECT` (docs/BENCHMARKS.md).
///
/// Not thread-safe; the owner calls ``deallocate()`` unless it handed the bytes on with ``takeData()``.
package struct AlignedBuffer {
    /// The page size of the platforms Coffer runs on, and a multiple of every disk's logical block size up to 4 KiB.
    package static let alignment = 4096

    private(set) var base: UnsafeMutableRawPointer
    private(set) var capacity: Int
    private(set) var count = 0
    private let recycler: BufferRecycler

    package init(capacity: Int, recycler: BufferRecycler = .shared) {
        self.recycler = recycler
        (base, self.capacity) = recycler.take(max(capacity, Self.alignment))
    }

    /// The bytes written so far.
    package var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }

    /// Room for `extra` more bytes at the end, then their address.
    private mutating func reserve(_ extra: Int) -> UnsafeMutableRawPointer {
        if count + extra > capacity {
            var grown = capacity * 2
            while grown < count + extra { grown *= 2 }
            let (moved, movedCapacity) = recycler.take(grown)
            moved.copyMemory(from: base, byteCount: count)
            recycler.give(base, capacity)
            base = moved
            capacity = movedCapacity
        }
        return base + count
    }

    package mutating func append(_ b: UnsafeRawBufferPointer) {
        guard let src = b.baseAddress, b.count > 0 else { return }
        reserve(b.count).copyMemory(from: src, byteCount: b.count)
        count += b.count
    }

    /// The bytes as a `Data` that owns the allocation (and gives it back to the recycler for the
    /// next pack when it is freed). The buffer must not be used afterwards.
    package func takeData() -> Data {
        let (capacity, recycler) = (self.capacity, self.recycler)
        return Data(bytesNoCopy: base, count: count, deallocator: .custom { p, _ in recycler.give(p, capacity) })
    }

    /// Gives the allocation back (a buffer whose bytes were not taken).
    package func deallocate() { recycler.give(base, capacity) }
}

/// Allocations of finished packs kept for the next ones (at most `limit`, each reused only for a
/// request of at least half its size). Without them every pack buffer was fresh memory from the
/// system: glibc serves aligned blocks of this size with a new `mmap` each time, and the chat
/// dataset's first backup took one page fault per 4 KiB of pack written (about 240k).
package final class BufferRecycler: Sendable {
    /// One per upload task of a backup (3 by default): a pack freed by an upload is the buffer of
    /// the next pack. Measured on the chat dataset's first backup (page faults, peak RSS): none
    /// kept 236-250k, 62 MiB; 1: 73-76k, 66-68 MiB; 3: 34-73k, 62-63 MiB; 4: 45-55k, 62-63 MiB;
    /// 6: 52-60k, 63-66 MiB.
    package static let shared = BufferRecycler(limit: 3)

    private struct Block: @unchecked Sendable {  // moved in and out under the mutex only
        let base: UnsafeMutableRawPointer
        let capacity: Int
    }
    private let free = Mutex<[Block]>([])
    private let limit: Int

    package init(limit: Int) { self.limit = limit }

    /// Blocks kept now.
    package var count: Int { free.withLock { $0.count } }

    /// A block of at least `minimum` bytes, aligned to ``AlignedBuffer/alignment``, and its capacity.
    package func take(_ minimum: Int) -> (UnsafeMutableRawPointer, Int) {
        let reused = free.withLock { blocks -> Block? in
            guard let i = blocks.firstIndex(where: { $0.capacity >= minimum && $0.capacity / 2 <= minimum }) else { return nil }
            return blocks.remove(at: i)
        }
        if let reused { return (reused.base, reused.capacity) }
        return (.allocate(byteCount: minimum, alignment: AlignedBuffer.alignment), minimum)
    }

    /// Keeps a block for reuse, or frees it when `limit` are kept.
    package func give(_ base: UnsafeMutableRawPointer, _ capacity: Int) {
        let kept = free.withLock { blocks -> Bool in
            guard blocks.count < limit else { return false }
            blocks.append(Block(base: base, capacity: capacity))
            return true
        }
        if !kept { base.deallocate() }
    }

    /// Frees every kept block (a backup's end, before its trees and snapshot).
    package func drain() {
        for b in free.withLock({ blocks in defer { blocks = [] }; return blocks }) { b.base.deallocate() }
    }
}
