import Foundation
import CofferCore
import Synchronization

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
/// there are two or more workers. A full pack is finished and handed to an upload task while its
/// slot is held, so a worker waiting for an upload holds that pack only (no second buffer is made
/// for the slot meanwhile); compression happens on the worker before the slot is taken.
final class PackPool: Sendable {
    /// One open pack. Only the task that holds the slot reads or writes `writer`: ``acquire(_:)``
    /// and ``release(_:)`` hand the slot from one worker to the next under the pool's mutex, which
    /// orders their accesses (an asynchronous lock per slot; a `Mutex` cannot be held across the
    /// suspension of an upload, and a writer is not `Sendable`).
    private final class Slot: Sendable {
        nonisolated(unsafe) var writer: PackWriter?
        /// Who holds the slot: ``free``, ``appending`` (one blob: microseconds) or ``suspended``
        /// (across an upload taking the full pack, or a new buffer). Written only under the pool's
        /// mutex, so a decision taken under it is exact; read without it while a waiter spins.
        let hold = Atomic<Int>(Slot.free)
        static let free = 0, appending = 1, suspended = 2
    }

    private struct State {
        /// Blobs assigned to each slot's current pack (added or about to be).
        var claims: [Int]
        /// Workers waiting for each slot, in order.
        var waiters: [[CheckedContinuation<Void, Never>]]
    }

    private let slots: [Slot]
    private let state: Mutex<State>
    private let factory: PackWriterFactory
    private let uploader: Uploader
    private let target: Int

    /// - Parameters:
    ///   - count: open packs (at least 2).
    ///   - factory: makes new, empty writers.
    ///   - target: a pack is finished once it holds this many bytes of blobs.
    init(count: Int, target: Int, uploader: Uploader, factory: PackWriterFactory) {
        let n = max(2, count)
        slots = (0..<n).map { _ in Slot() }
        state = Mutex(State(claims: Array(repeating: 0, count: n), waiters: Array(repeating: [], count: n)))
        self.factory = factory
        self.uploader = uploader
        self.target = target
    }

    var count: Int { slots.count }

    /// Picks a slot: a random empty one if any, else a random one (SystemRandomNumberGenerator
    /// is the OS CSPRNG).
    private func pick() -> Int {
        state.withLock { s in
            var rng = SystemRandomNumberGenerator()
            let empty = s.claims.indices.filter { s.claims[$0] == 0 }
            let i = empty.isEmpty ? Int.random(in: 0..<slots.count, using: &rng) : empty.randomElement(using: &rng)!
            s.claims[i] += 1
            return i
        }
    }

    private func released(_ slot: Int, blobs: Int) {
        state.withLock { $0.claims[slot] = max(0, $0.claims[slot] - blobs) }
    }

    /// How long a worker spins for a slot whose holder is appending one blob before it suspends.
    /// An append takes microseconds; a suspension costs a wake-up of an executor thread on each
    /// side. Measured on the chat dataset's database alone (two workers, two cores, about 34 000
    /// blobs): 2 373 voluntary context switches and the cores idle 37 % of the run when every
    /// held slot meant a suspension; 15 % with this spin.
    static let spinLimit: Duration = .microseconds(50)

    /// Takes slot `i` if it is free (under the pool's mutex); else says whether its holder is suspended.
    private func tryTake(_ i: Int) -> (taken: Bool, long: Bool) {
        state.withLock { _ in
            let hold = slots[i].hold.load(ordering: .relaxed)
            guard hold == Slot.free else { return (false, hold == Slot.suspended) }
            slots[i].hold.store(Slot.appending, ordering: .relaxed)
            return (true, false)
        }
    }

    /// Waits until this task holds slot `i`: spinning briefly while the holder appends one blob,
    /// suspended (not blocking a thread) while the holder is itself suspended or for longer.
    private func acquire(_ i: Int) async {
        // Most blobs find their slot free: taken without making a continuation (one per blob,
        // tens of thousands for a database).
        var attempt = tryTake(i)
        if attempt.taken { return }
        if !attempt.long {
            let deadline = ContinuousClock.now + Self.spinLimit
            var spins = 0
            while true {
                // Loads only (no traffic on the mutex the holder needs to release the slot).
                let hint = slots[i].hold.load(ordering: .relaxed)
                if hint == Slot.suspended { break }
                if hint == Slot.free {
                    attempt = tryTake(i)
                    if attempt.taken { return }
                    if attempt.long { break }
                }
                spins += 1
                if spins & 63 == 0, ContinuousClock.now >= deadline { break }
            }
        }
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if slots[i].hold.load(ordering: .relaxed) == Slot.free {
                    slots[i].hold.store(Slot.appending, ordering: .relaxed)
                    return true
                }
                s.waiters[i].append(c)
                return false
            }
            if now { c.resume() }
        }
    }

    /// Passes slot `i` to the next waiting worker, if any.
    private func release(_ i: Int) {
        let next = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if s.waiters[i].isEmpty {
                slots[i].hold.store(Slot.free, ordering: .relaxed)
                return nil
            }
            slots[i].hold.store(Slot.appending, ordering: .relaxed)  // passed on: the next holder appends
            return s.waiters[i].removeFirst()
        }
        next?.resume()
    }

    /// Marks the holder of slot `i` as suspended (`true`) or back to appending (`false`).
    private func setLong(_ i: Int, _ long: Bool) {
        state.withLock { _ in slots[i].hold.store(long ? Slot.suspended : Slot.appending, ordering: .relaxed) }
    }

    /// Finishes slot `i`'s pack if `close` says so; the slot must be held.
    private func finish(_ i: Int, if close: (PackWriter) -> Bool) -> UnnamedPack? {
        guard let cur = slots[i].writer, cur.blobCount > 0, close(cur) else { return nil }
        slots[i].writer = nil
        released(i, blobs: cur.blobCount)
        return cur.finishUnnamed()  // named (hashed) by the upload task, after the slot is released
    }

    /// Adds one blob whose payload is already compressed (or is the plaintext) to a random open pack,
    /// finishing and uploading that pack if the blob would overflow it or fills it. The worker holds
    /// the pack's slot until the pack is handed to an upload, so a worker waiting for an upload
    /// holds that pack only (no second buffer is made for the slot meanwhile).
    /// - Throws: ``FormatError`` when the blob cannot be packed, ``BackupError`` when an upload failed.
    @discardableResult
    func add(type: BlobType, id: ChunkID, payload: UnsafeRawBufferPointer, compression: Compression,
             uncompressedLength: Int) async throws -> PackEntry {
        let i = pick()
        await acquire(i)
        defer { release(i) }
        // Close a pack before a blob would overflow it: its buffer never reallocates.
        let target = self.target
        var suspended = false
        if let full = finish(i, if: { BackupRun.packWouldOverflow($0, adding: payload.count, target: target) }) {
            setLong(i, true)
            suspended = true
            try await uploader.submit(full)
        }
        if slots[i].writer == nil {
            if !suspended { setLong(i, true) }
            suspended = true
            slots[i].writer = await factory.next()
        }
        if suspended { setLong(i, false) }
        let entry: PackEntry
        do {
            entry = try slots[i].writer!.add(type: type, id: id, payload: payload, compression: compression,
                                             uncompressedLength: uncompressedLength)
        } catch {
            released(i, blobs: 1)
            throw error
        }
        if let full = finish(i, if: { $0.byteCount >= target }) {
            setLong(i, true)
            try await uploader.submit(full)
        }
        return entry
    }

    /// Compresses (when asked and worthwhile) with the caller's deflater into `scratch` (the
    /// caller's, at least as large as `plaintext`), then adds: compression runs before a slot is held.
    @discardableResult
    func add(type: BlobType, id: ChunkID, plaintext: UnsafeRawBufferPointer, compress: Bool,
             deflater: Deflater, scratch: UnsafeMutableRawBufferPointer) async throws -> PackEntry {
        if compress {
            let n: Int? = deflater.compress(plaintext) { c in
                guard let c else { return nil }
                scratch.copyMemory(from: c)
                return c.count
            }
            if let n {
                return try await add(type: type, id: id, payload: UnsafeRawBufferPointer(rebasing: scratch[0..<n]),
                                     compression: .deflate, uncompressedLength: plaintext.count)
            }
        }
        return try await add(type: type, id: id, payload: plaintext, compression: .none, uncompressedLength: plaintext.count)
    }

    /// Finishes and uploads every open pack that holds blobs (the end of the run, or a cancel).
    func flush() async throws(BackupError) {
        var firstError: BackupError?
        for i in slots.indices {
            await acquire(i)
            if let full = finish(i, if: { _ in true }) {
                setLong(i, true)
                do { try await uploader.submit(full) } catch { firstError = firstError ?? error }
            }
            release(i)
        }
        if let firstError { throw firstError }
    }
}
