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
    /// Test hook (``TestHooks/stop(afterPacks:)``): the process stops itself (SIGSTOP) once N packs
    /// are uploaded, so tests can suspend a real backup at a known point and resume it with SIGCONT.
    private let stopAfterPacks = TestHooks.stopAfterPacks

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
                try await engine.createWithRetry(pack.id.packName, data: pack.bytes, id: pack.id)
            } catch {
                self.fail(BackupRun.wrap(error))
                self.finishOne()
                return
            }
            TestHooks.crashPoint("backup-pack")
            let (checkpoint, count) = self.uploaded(pack)
            if let checkpoint {
                do { try await self.writeIndex(checkpoint) } catch { self.fail(BackupRun.wrap(error)) }
            }
            if let n = self.stopAfterPacks, count == n { raise(SIGSTOP) }  // raise: this thread stops before it goes on
            self.finishOne()
        }
    }

    /// Records an uploaded pack; returns the packs to checkpoint now, if it is time.
    private func uploaded(_ pack: FinishedPack) -> ([IndexedPack]?, Int) {
        cond.lock()
        defer { cond.unlock() }
        pending.append(IndexedPack(id: pack.id, salt: pack.salt, length: pack.bytes.count, entries: pack.entries))
        pendingBytes += pack.bytes.count
        bytesStored += Int64(pack.bytes.count)
        packsWritten += 1
        guard pendingBytes >= checkpointBytes || ContinuousClock.now - lastCheckpoint >= checkpointInterval else { return (nil, packsWritten) }
        let out = pending
        pending = []
        pendingBytes = 0
        lastCheckpoint = .now
        return (out, packsWritten)
    }

    private func indexWritten(_ id: ObjectID, size: Int) {
        cond.lock()
        metadataBytes += Int64(size)
        indexObjectsWritten.append(id)
        cond.unlock()
    }

    /// The index objects this run wrote so far (the commit check may supersede them).
    var indexObjects: [ObjectID] {
        cond.lock(); defer { cond.unlock() }
        return indexObjectsWritten
    }

    private func finishOne() {
        cond.lock()
        inFlight -= 1
        cond.broadcast()
        cond.unlock()
    }

    private func writeIndex(_ packs: [IndexedPack]) async throws(BackupError) {
        let (id, size) = try await engine.writeSealed(IndexFile(packs: packs).encoded(), type: .index) { $0.indexName }
        TestHooks.crashPoint("backup-index")
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
    /// Attempts of a create on a backend without a retry layer of its own (a folder: EIO or a
    /// timeout on a network file system).
    static let localAttempts = 4

    /// Conditional create (`Storage.create`: S3 `If-None-Match: *`, a hard link locally), retried on
    /// transient failures only when the backend does not retry them itself
    /// (`Storage.retriesTransientFailures`: one retry layer, never two stacked). A retried upload
    /// resends identical bytes, and identical bytes already stored count as success. Every object the engine writes is named by the hash of its
    /// bytes, so a name that already holds *different* bytes is a damaged or forged object (or a
    /// SHA-256 collision): the error says so and nothing is overwritten.
    /// - Parameter id: the object id (SHA-256 of `data`) when the caller knows it: S3 then signs
    ///   with it instead of hashing the bytes again.
    func createWithRetry(_ name: String, data: Data, id: ObjectID? = nil) async throws(BackupError) {
        let attempts = storage.retriesTransientFailures ? 1 : Self.localAttempts
        var attempt = 0
        while true {
            do {
                if let id {
                    try await storage.create(name, data: data, sha256: id.bytes)
                } else {
                    try await storage.create(name, data: data)
                }
                return
            } catch {
                if error.code == .alreadyExists {
                    throw BackupError(.dataDamaged, object: name,
                                      message: "\(name) already exists in the storage with different content. Objects are named by "
                                        + "the hash of their content, so the stored one is damaged or was put there by someone else "
                                        + "(the storage provider), or this is a hash collision. Nothing was overwritten; run "
                                        + "`coffer check --read-data` and do not trust this storage until it is explained",
                                      underlying: error)
                }
                attempt += 1
                if !error.isTransient || attempt >= attempts {
                    throw Self.storageError(error, doing: "uploading \(name)")
                }
                try? await Task.sleep(for: .milliseconds(200 << attempt))
            }
        }
    }
}
