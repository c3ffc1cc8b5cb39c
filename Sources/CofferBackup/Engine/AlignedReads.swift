#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Synchronization
import CofferCore
import CofferStorage

/// Ranged reads of packs that do not show the storage provider where blobs begin and end: every
/// read of part of a pack starts and ends on a ``Engine/readAlignment`` (1 MiB) boundary of the
/// pack, the end clipped to the pack's size, or reads the whole pack (docs/ENGINE.md, "Reads").
extension Engine {
    /// Alignment of ranged pack reads.
    static let readAlignment = 1 << 20

    /// The repository's padding policy (from its config).
    var padding: PaddingPolicy { PaddingPolicy(parameters: config.parameters) }

    /// `range` widened to ``readAlignment`` boundaries and clipped to `packLength`.
    static func alignedRange(_ range: Range<Int>, packLength: Int) -> Range<Int> {
        let a = readAlignment
        let lo = range.lowerBound / a * a
        let hi = min(packLength, (range.upperBound + a - 1) / a * a)
        return lo..<max(lo, hi)
    }

    /// The indexed size of a pack, when known.
    func packLength(of pack: ObjectID) -> Int? {
        index.withLock { $0.packs.length(of: pack) }
    }

    /// Reads the aligned part of `pack` that covers `range` (the whole pack when its size is not
    /// indexed). Returns the bytes and the offset in the pack where they start.
    func readAligned(_ pack: ObjectID, covering range: Range<Int>) async throws(StorageError) -> (bytes: Data, start: Int) {
        let name = pack.packName
        guard let length = packLength(of: pack) else {
            return (try await objects.rawGet(name), 0)
        }
        let r = Self.alignedRange(range, packLength: length)
        if r.lowerBound == 0 && r.upperBound >= length { return (try await objects.rawGet(name), 0) }
        return (try await objects.rawGet(name, range: r), r.lowerBound)
    }

    /// The stored bytes of blob `entry` within bytes read from `start` of its pack.
    static func slice(_ bytes: Data, start: Int, entry: PackEntry) -> Data? {
        let lo = entry.offset - start
        guard lo >= 0, lo + entry.length <= bytes.count else { return nil }
        let base = bytes.startIndex
        return bytes[(base + lo)..<(base + lo + entry.length)]
    }

    /// The last `count` bytes of a pack of `size` bytes, read from a ``readAlignment`` boundary:
    /// the bytes and where they start. For reading a pack's header without showing its length.
    func readAlignedTail(_ name: String, size: Int, count: Int) async throws(StorageError) -> (bytes: Data, start: Int) {
        let r = Self.alignedRange(max(0, size - count)..<size, packLength: size)
        if r.lowerBound == 0 { return (try await objects.rawGet(name), 0) }
        return (try await objects.rawGet(name, range: r), r.lowerBound)
    }
}

/// Aligned windows of packs read by one restore, shared by the files it restores in parallel:
/// neighbouring files' chunks lie in the same windows (blobs are spread at random over a run's
/// packs), so a window read for one file serves the others. Least recently used dropped first;
/// memory at most `capacity × BlobWindowReader.maxWindow`. Two tasks missing the same window at
/// once may both read it (harmless, rare).
final class PackWindowCache: Sendable {
    struct Window: Sendable {
        var pack: ObjectID
        var start: Int
        var bytes: Data
        var end: Int { start + bytes.count }
    }

    private let windows = Mutex<[Window]>([])
    let capacity: Int

    init(capacity: Int = 6) { self.capacity = max(1, capacity) }

    func find(_ pack: ObjectID, covering range: Range<Int>) -> Window? {
        windows.withLock { w in
            guard let k = w.firstIndex(where: { $0.pack == pack && $0.start <= range.lowerBound && range.upperBound <= $0.end }) else {
                return nil
            }
            let hit = w.remove(at: k)
            w.append(hit)
            return hit
        }
    }

    /// A window of `pack` that holds `offset` (the beginning of a blob it does not wholly hold).
    func find(_ pack: ObjectID, holding offset: Int) -> Window? {
        windows.withLock { w in w.last { $0.pack == pack && $0.start <= offset && offset < $0.end } }
    }

    func insert(_ window: Window) {
        windows.withLock { w in
            w.append(window)
            if w.count > capacity { w.removeFirst(w.count - capacity) }
        }
    }
}

/// Reads the blobs of one file in order through aligned windows of their packs (cached in a
/// ``PackWindowCache``). Blobs are spread at random over the packs a run had open, so consecutive
/// chunks of a file alternate between packs: one window per pack, read once, serves all the chunks
/// it holds. A window reaches ahead over the file's next chunks in the same pack (up to
/// ``maxWindow``), so a large file costs about one read per window.
final class BlobWindowReader {
    /// Largest window read at once (a multiple of the alignment).
    static let maxWindow = 4 << 20

    private let engine: Engine
    private let opener: BlobOpener
    private let cache: PackWindowCache

    init(engine: Engine, opener: BlobOpener, cache: PackWindowCache) {
        self.engine = engine
        self.opener = opener
        self.cache = cache
    }

    /// Reads, verifies and returns blob `ids[i]`; `ids` (the file's chunk list) lets the window
    /// reach ahead.
    func read(_ ids: ArraySlice<ChunkID>, at i: Int) async throws(BackupError) -> Data {
        let id = ids[i]
        guard let loc = engine.location(of: id), let salt = engine.salt(of: loc.pack) else {
            throw BackupError(.dataMissing, object: "blob \(id.hex)", message: "blob \(id.hex) is not in the index: its data is missing")
        }
        let name = loc.pack.packName
        let range = loc.entry.range
        let damaged = BackupError(.dataDamaged, object: name, message: "\(name) is damaged: shorter than its index says")
        let sealed: Data
        if let hit = cache.find(loc.pack, covering: range) {
            guard let s = Engine.slice(hit.bytes, start: hit.start, entry: loc.entry) else { throw damaged }
            sealed = s
        } else {
            // A cached window may hold the blob's beginning (a blob straddling a window's end):
            // read on from that window's end instead of reading its last MiB again.
            let head = cache.find(loc.pack, holding: range.lowerBound)
            let start = head?.end ?? range.lowerBound / Engine.readAlignment * Engine.readAlignment
            // Reach ahead over the next chunks stored after this one in the same pack.
            var end = range.upperBound
            var j = ids.index(after: i)
            var looked = 0
            while j < ids.endIndex, looked < 4096 {
                if let l = engine.location(of: ids[j]), l.pack == loc.pack, l.entry.offset >= range.lowerBound,
                   l.entry.range.upperBound <= start + Self.maxWindow {
                    end = max(end, l.entry.range.upperBound)
                }
                j = ids.index(after: j)
                looked += 1
            }
            let w: PackWindowCache.Window
            do {
                let (bytes, s) = try await engine.readAligned(loc.pack, covering: start..<end)
                w = PackWindowCache.Window(pack: loc.pack, start: s, bytes: bytes)
            } catch {
                if error.code == .rangeNotSatisfiable {
                    throw BackupError(.dataDamaged, object: name, message: "\(name) is damaged: shorter than its index says", underlying: error)
                }
                throw Engine.storageError(error, doing: "reading blob \(id.hex) from \(name)")
            }
            cache.insert(w)
            if let head, w.start <= head.end, range.upperBound <= w.end {
                // The blob's first part from the cached window, the rest from the new one.
                let b0 = head.bytes.startIndex, b1 = w.bytes.startIndex
                var joined = Data(head.bytes[(b0 + range.lowerBound - head.start)..<(b0 + head.end - head.start)])
                joined.append(w.bytes[(b1 + head.end - w.start)..<(b1 + range.upperBound - w.start)])
                sealed = joined
            } else {
                guard let s = Engine.slice(w.bytes, start: w.start, entry: loc.entry) else { throw damaged }
                sealed = s
            }
        }
        do {
            return try opener.open(sealed, entry: loc.entry, salt: salt)
        } catch {
            throw BackupError(.dataDamaged, object: name,
                              message: "blob \(id.hex) in \(name) is damaged: \(error.message)", underlying: error)
        }
    }
}
