import Foundation
import CofferCore

/// The open packs of one backup run, shared by its workers (and then by the trees). Every new blob
/// goes to one of them chosen with the system CSPRNG, so where a blob lands (which pack, which
/// position) says nothing about which file or which part of a file it came from, and a pack's
/// contents do not follow the order of the files read.
///
/// Choice: uniformly among the open packs that hold no blob yet, else uniformly among all. So every
/// pack of the set receives a blob as soon as the run has that many: the number of packs a small
/// run writes is fixed (the size of the set) instead of depending on how its few blobs happened
/// to fall, which would leak how many blobs the run had.
///
/// Memory: the set has `max(2, workers)` packs, the number of per-worker packs it replaces when
/// there are two or more workers. A full pack is finished and handed to the uploader while its
/// slot is locked, so a worker waiting for an upload slot holds that pack only (no second buffer
/// is made for the slot meanwhile); compression happens on the worker before the slot is locked.
final class PackPool: @unchecked Sendable {
    private final class Slot {
        let lock = NSLock()
        var writer: PackWriter?
    }

    private let slots: [Slot]
    /// Guards `claims`: blobs assigned to each slot's current pack (added or about to be).
    private let choice = NSLock()
    private var claims: [Int]
    private let make: () -> PackWriter
    private let uploader: Uploader
    private let target: Int

    /// - Parameters:
    ///   - count: open packs (at least 2).
    ///   - make: a new, empty writer (the run's ``PackWriterFactory``).
    ///   - target: a pack is finished once it holds this many bytes of blobs.
    init(count: Int, target: Int, uploader: Uploader, make: @escaping () -> PackWriter) {
        let n = max(2, count)
        slots = (0..<n).map { _ in Slot() }
        claims = Array(repeating: 0, count: n)
        self.make = make
        self.uploader = uploader
        self.target = target
    }

    var count: Int { slots.count }

    /// Picks a slot: a random empty one if any, else a random one (SystemRandomNumberGenerator
    /// is the OS CSPRNG).
    private func pick() -> Int {
        choice.lock()
        defer { choice.unlock() }
        var rng = SystemRandomNumberGenerator()
        let empty = claims.indices.filter { claims[$0] == 0 }
        let i = empty.isEmpty ? Int.random(in: 0..<slots.count, using: &rng) : empty.randomElement(using: &rng)!
        claims[i] += 1
        return i
    }

    private func released(_ slot: Int, blobs: Int) {
        choice.lock()
        claims[slot] = max(0, claims[slot] - blobs)
        choice.unlock()
    }

    /// Adds one blob whose payload is already compressed (or is the plaintext) to a random open pack,
    /// finishing and uploading that pack if the blob would overflow it or fills it.
    /// - Throws: ``FormatError`` when the blob cannot be packed, ``BackupError`` when an upload failed.
    @discardableResult
    func add(type: BlobType, id: ChunkID, payload: UnsafeRawBufferPointer, compression: Compression,
             uncompressedLength: Int) throws -> PackEntry {
        let i = pick()
        let slot = slots[i]
        slot.lock.lock()
        defer { slot.lock.unlock() }
        // Close a pack before a blob would overflow it: its buffer never reallocates.
        if let w = slot.writer, w.blobCount > 0, BackupRun.packWouldOverflow(w, adding: payload.count, target: target) {
            slot.writer = nil
            released(i, blobs: w.blobCount)
            try uploader.submit { w.finish() }
        }
        if slot.writer == nil { slot.writer = make() }
        let w = slot.writer!
        let entry: PackEntry
        do {
            entry = try w.add(type: type, id: id, payload: payload, compression: compression,
                              uncompressedLength: uncompressedLength)
        } catch {
            released(i, blobs: 1)
            throw error
        }
        if w.byteCount >= target {
            slot.writer = nil
            released(i, blobs: w.blobCount)
            try uploader.submit { w.finish() }
        }
        return entry
    }

    /// Compresses (when asked and worthwhile) with the caller's deflater, then adds.
    @discardableResult
    func add(type: BlobType, id: ChunkID, plaintext: UnsafeRawBufferPointer, compress: Bool,
             deflater: Deflater) throws -> PackEntry {
        if compress {
            return try deflater.compress(plaintext) { (c) throws -> PackEntry in
                if let c {
                    return try add(type: type, id: id, payload: c, compression: .deflate, uncompressedLength: plaintext.count)
                }
                return try add(type: type, id: id, payload: plaintext, compression: .none, uncompressedLength: plaintext.count)
            }
        }
        return try add(type: type, id: id, payload: plaintext, compression: .none, uncompressedLength: plaintext.count)
    }

    /// Finishes and uploads every open pack that holds blobs (the end of the run, or a cancel).
    func flush() throws(BackupError) {
        var firstError: BackupError?
        for (i, slot) in slots.enumerated() {
            slot.lock.lock()
            if let w = slot.writer, w.blobCount > 0 {
                slot.writer = nil
                released(i, blobs: w.blobCount)
                do { try uploader.submit { w.finish() } } catch { firstError = firstError ?? error }
            }
            slot.lock.unlock()
        }
        if let firstError { throw firstError }
    }
}
