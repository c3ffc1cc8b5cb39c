import Foundation
import Synchronization
import CofferCore
import CofferStorage

/// Uploads finished packs with bounded concurrency (back-pressure on the workers that fill them)
/// and writes index checkpoints: after at most `checkpointBytes` of packs or `checkpointInterval`,
/// the packs uploaded since the last checkpoint are written to a new index object, so an
/// interrupted backup does not upload them again.
///
/// `submit` and `drain` block the calling thread: call them only from the engine's worker
/// threads, never from the cooperative pool.
final class Uploader: @unchecked Sendable {
    let engine: Engine
    let limit: Int
    let checkpointBytes: Int
    let checkpointInterval: Duration
    private let cond = NSCondition()
    private var inFlight = 0
    private var pending: [IndexedPack] = []
    private var pendingBytes = 0
    private var lastCheckpoint = ContinuousClock.now
    private(set) var failure: BackupError?
    private(set) var bytesStored: Int64 = 0
    private(set) var metadataBytes: Int64 = 0
    private(set) var packsWritten = 0
    private(set) var indexObjectsWritten: [ObjectID] = []

    init(engine: Engine, limit: Int, checkpointBytes: Int, checkpointInterval: Duration) {
        self.engine = engine
        self.limit = max(1, limit)
        self.checkpointBytes = min(max(1, checkpointBytes), 64 << 20)
        self.checkpointInterval = min(checkpointInterval, .seconds(60))
    }

    var failed: BackupError? {
        cond.lock(); defer { cond.unlock() }
        return failure
    }

    var stored: Int64 {
        cond.lock(); defer { cond.unlock() }
        return bytesStored
    }

    private func fail(_ e: BackupError) {
        cond.lock()
        if failure == nil { failure = e }
        cond.broadcast()
        cond.unlock()
    }

    /// Packs recovered from storage (uploaded by an interrupted run, never indexed): indexed at the next checkpoint.
    func adopt(_ packs: [IndexedPack]) {
        cond.lock()
        pending.append(contentsOf: packs)
        cond.unlock()
    }

    /// Queues a finished pack for upload; blocks while `limit` uploads are in flight.
    func submit(_ pack: FinishedPack) throws(BackupError) {
        try submit { pack }
    }

    /// Waits for an upload slot, then finishes the pack (`make`) and uploads it: a worker waiting
    /// for a slot holds only its open pack, not a finished copy as well.
    func submit(_ make: () -> FinishedPack) throws(BackupError) {
        cond.lock()
        while inFlight >= limit && failure == nil { cond.wait() }
        if let failure {
            cond.unlock()
            throw failure
        }
        inFlight += 1
        cond.unlock()
        let pack = make()
        let engine = self.engine
        Task {
            do {
                try await engine.putWithRetry(pack.id.packName, data: pack.bytes)
            } catch {
                self.fail(BackupRun.wrap(error))
                self.finishOne()
                return
            }
            if let checkpoint = self.uploaded(pack) {
                do { try await self.writeIndex(checkpoint) } catch { self.fail(BackupRun.wrap(error)) }
            }
            self.finishOne()
        }
    }

    /// Records an uploaded pack; returns the packs to checkpoint now, if it is time.
    private func uploaded(_ pack: FinishedPack) -> [IndexedPack]? {
        cond.lock()
        defer { cond.unlock() }
        pending.append(IndexedPack(id: pack.id, salt: pack.salt, length: pack.bytes.count, entries: pack.entries))
        pendingBytes += pack.bytes.count
        bytesStored += Int64(pack.bytes.count)
        packsWritten += 1
        guard pendingBytes >= checkpointBytes || ContinuousClock.now - lastCheckpoint >= checkpointInterval else { return nil }
        let out = pending
        pending = []
        pendingBytes = 0
        lastCheckpoint = .now
        return out
    }

    private func indexWritten(_ id: ObjectID, size: Int) {
        cond.lock()
        metadataBytes += Int64(size)
        indexObjectsWritten.append(id)
        cond.unlock()
    }

    private func finishOne() {
        cond.lock()
        inFlight -= 1
        cond.broadcast()
        cond.unlock()
    }

    private func writeIndex(_ packs: [IndexedPack]) async throws(BackupError) {
        let (id, size) = try await engine.writeSealed(IndexFile(packs: packs).encoded(), type: .index) { $0.indexName }
        indexWritten(id, size: size)
        engine.index.withLock { state in
            state.indexObjects.insert(id)
            for p in packs { state.add(p) }
        }
    }

    /// Waits for every upload; then writes an index for packs not yet in one. Blocking.
    func drain() throws(BackupError) {
        cond.lock()
        while inFlight > 0 { cond.wait() }
        let rest = pending
        pending = []
        pendingBytes = 0
        let failure = self.failure
        cond.unlock()
        if let failure { throw failure }
        guard !rest.isEmpty else { return }
        do {
            try runBlocking { try await self.writeIndex(rest) }
        } catch let e as BackupError {
            throw e
        } catch {
            throw BackupError(.storage, message: "\(error)")
        }
    }
}

extension Engine {
    /// `put` with a few retries on transient failures (a retried upload resends identical bytes).
    func putWithRetry(_ name: String, data: Data) async throws(BackupError) {
        var attempt = 0
        while true {
            do {
                try await storage.put(name, data: data)
                return
            } catch {
                attempt += 1
                if !error.isTransient || attempt >= 4 {
                    throw Self.storageError(error, doing: "uploading \(name)")
                }
                try? await Task.sleep(for: .milliseconds(200 << attempt))
            }
        }
    }
}
