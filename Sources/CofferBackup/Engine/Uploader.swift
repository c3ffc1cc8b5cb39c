import Foundation
import Synchronization
import CofferCore
import CofferStorage
import AsyncAlgorithms

/// Uploads finished packs with bounded concurrency and writes index checkpoints: after at most
/// `checkpointBytes` of packs or `checkpointInterval`, the packs uploaded since the last checkpoint
/// are written to a new index object, so an interrupted backup does not upload them again.
///
/// Packs reach the uploads through a channel without a buffer (`AsyncChannel`): ``submit(_:)``
/// suspends until one of the `limit` upload tasks (``uploadLoop()``, run in the backup's task
/// group) takes the pack, which is the back-pressure on the workers that fill packs. A failed
/// upload closes the channel: every waiting and later ``submit(_:)`` throws that failure.
final class Uploader: Sendable {
    let engine: Engine
    let limit: Int
    let checkpointBytes: Int
    let checkpointInterval: Duration
    private let channel = AsyncChannel<UnnamedPack>()

    private struct State {
        var pending: [IndexedPack] = []
        var pendingBytes = 0
        var lastCheckpoint = ContinuousClock.now
        var failure: BackupError?
        var bytesStored: Int64 = 0
        var metadataBytes: Int64 = 0
        var packsWritten = 0
        var indexObjectsWritten: [ObjectID] = []
    }
    private let state = Mutex(State())
    /// Test hook (``TestHooks/stop(afterPacks:)``): the process stops itself (SIGSTOP) once N packs
    /// are uploaded, so tests can suspend a real backup at a known point and resume it with SIGCONT.
    private let stopAfterPacks = TestHooks.stopAfterPacks

    init(engine: Engine, limit: Int, checkpointBytes: Int, checkpointInterval: Duration) {
        self.engine = engine
        self.limit = max(1, limit)
        self.checkpointBytes = min(max(1, checkpointBytes), 64 << 20)
        self.checkpointInterval = min(checkpointInterval, .seconds(60))
    }

    var failed: BackupError? { state.withLock { $0.failure } }
    var stored: Int64 { state.withLock { $0.bytesStored } }
    var metadataBytes: Int64 { state.withLock { $0.metadataBytes } }
    var packsWritten: Int { state.withLock { $0.packsWritten } }
    /// The index objects this run wrote so far (the commit check may supersede them).
    var indexObjects: [ObjectID] { state.withLock { $0.indexObjectsWritten } }

    private func fail(_ e: BackupError) {
        state.withLock { if $0.failure == nil { $0.failure = e } }
        channel.finish()  // waiting submitters return and see the failure
    }

    /// Packs recovered from storage (uploaded by an interrupted run, never indexed): indexed at the next checkpoint.
    func adopt(_ packs: [IndexedPack]) {
        state.withLock { $0.pending.append(contentsOf: packs) }
    }

    /// Hands a finished pack to an upload task; suspends until one takes it.
    /// - Throws: the first upload failure; `.cancelled` when the run is cancelled meanwhile.
    func submit(_ pack: UnnamedPack) async throws(BackupError) {
        if let f = failed { throw f }
        await channel.send(pack)
        if let f = failed { throw f }
        if Task.isCancelled {
            throw BackupRun.cancelled
        }
    }

    /// No more packs: the upload tasks end once they have uploaded what they hold.
    func close() { channel.finish() }

    /// One upload task: uploads packs as they come until ``close()`` (or a failure).
    func uploadLoop() async {
        for await unnamed in channel {
            // The pack's SHA-256 (its name) is computed here, not by the worker that filled it: a
            // worker holds an open pack only while it appends, so the other workers rarely wait.
            let pack = unnamed.named()
            do {
                try await engine.objects.create(pack.id.packName, data: pack.bytes, id: pack.id)
            } catch {
                fail(error)
                return
            }
            TestHooks.crashPoint("backup-pack")
            let (checkpoint, count) = uploaded(pack)
            if let checkpoint {
                do { try await writeIndex(checkpoint) } catch {
                    fail(error)
                    return
                }
            }
            if let n = stopAfterPacks, count == n { raise(SIGSTOP) }  // raise: this thread stops before it goes on
        }
    }

    /// Records an uploaded pack; returns the packs to checkpoint now, if it is time.
    private func uploaded(_ pack: FinishedPack) -> ([IndexedPack]?, Int) {
        state.withLock { s in
            s.pending.append(IndexedPack(id: pack.id, salt: pack.salt, length: pack.bytes.count, entries: pack.entries))
            s.pendingBytes += pack.bytes.count
            s.bytesStored += Int64(pack.bytes.count)
            s.packsWritten += 1
            guard s.pendingBytes >= checkpointBytes || ContinuousClock.now - s.lastCheckpoint >= checkpointInterval else {
                return (nil, s.packsWritten)
            }
            let out = s.pending
            s.pending = []
            s.pendingBytes = 0
            s.lastCheckpoint = .now
            return (out, s.packsWritten)
        }
    }

    private func writeIndex(_ packs: [IndexedPack]) async throws(BackupError) {
        let (id, size) = try await engine.writeSealed(IndexFile(packs: packs).encoded(), type: .index) { $0.indexName }
        TestHooks.crashPoint("backup-index")
        state.withLock {
            $0.metadataBytes += Int64(size)
            $0.indexObjectsWritten.append(id)
        }
        engine.index.withLock { state in
            state.indexObjects.insert(id)
            for p in packs { state.add(p) }
        }
    }

    /// After the upload tasks have ended: writes an index for the packs not yet in one.
    func drain() async throws(BackupError) {
        let (rest, failure) = state.withLock { s in
            let rest = s.pending
            s.pending = []
            s.pendingBytes = 0
            return (rest, s.failure)
        }
        if let failure { throw failure }
        guard !rest.isEmpty else { return }
        try await writeIndex(rest)
    }
}
