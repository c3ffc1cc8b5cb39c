import Foundation
import Synchronization
import CofferCore
import CofferStorage
import CofferPosix

extension Engine {
    /// Runs a backup in the calling task (its blocking work on the I/O executor), reporting events
    /// through `events` (``BackupEvent/finished(_:)`` last). Setting `cancel` (or cancelling the
    /// task) stops it at the next item: no snapshot is written, and the next backup does not upload
    /// the packs this one stored again (``BackupRun/cancelled``).
    func backup(paths: [String], options: BackupOptions, cancel: CancelFlag = CancelFlag(),
                events: @escaping @Sendable (BackupEvent) -> Void) async throws(BackupError) -> BackupSummary {
        let pipe = BackupPipeline(engine: self, options: options, cancel: cancel, events: events)
        let summary = try await withTaskExecutorPreference(IOExecutor.shared) { () async throws(BackupError) -> BackupSummary in
            try await BackupRun(pipe: pipe, paths: paths).run()
        }
        events(.finished(summary))
        return summary
    }

    /// The backup as an asynchronous sequence of events: the one unstructured task of a backup is
    /// the one that feeds this sequence (a sequence outlives the call that returns it). A consumer
    /// that stops iterating sets the run's cancel flag.
    func backupStream(repository: Repository, paths: [String], options: BackupOptions) -> AsyncThrowingStream<BackupEvent, any Error> {
        AsyncThrowingStream(bufferingPolicy: .unbounded) { continuation in
            let cancel = CancelFlag()
            continuation.onTermination = { reason in
                if case .cancelled = reason { cancel.set() }
            }
            Task(executorPreference: IOExecutor.shared) {
                do {
                    _ = try await self.backup(paths: paths, options: options, cancel: cancel) { continuation.yield($0) }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
        }
    }

    /// Packs in storage that no index lists and no prune mark condemns: uploaded by a run that was
    /// interrupted before its checkpoint. Their headers (authenticated) are read so they can be indexed.
    func recoverOrphanPacks() async throws(BackupError) -> [IndexedPack] {
        let known = index.withLock { Set($0.packs.keys).union($0.condemned) }
        var out: [IndexedPack] = []
        for info in try await listObjects("data/") {
            guard let id = Self.objectID(fromName: info.name, prefix: "data/"), !known.contains(id),
                  info.name == id.packName else { continue }
            guard let p = try? await readPackHeader(id, size: info.size) else { continue }
            out.append(p)
        }
        return out
    }

    /// Reads and authenticates a pack's header with one ranged read of its tail.
    func readPackHeader(_ id: ObjectID, size: Int) async throws(BackupError) -> IndexedPack {
        let name = id.packName
        let tailLen = min(size, PackFormat.suggestedTailLength)
        do {
            // Aligned reads: the provider does not learn where the header starts.
            var tail = try await readAlignedTail(name, size: size, count: tailLen).bytes
            let trailer = try PackTrailer(tail: tail)
            if trailer.tailLength > tail.count {
                guard trailer.tailLength <= size else {
                    throw BackupError(.dataDamaged, object: name, message: "\(name) is damaged: header longer than the pack")
                }
                tail = try await readAlignedTail(name, size: size, count: trailer.tailLength).bytes
            }
            let header = try PackHeader(tail: tail, keys: keys, packLength: size)
            return IndexedPack(id: id, salt: header.salt, length: size, entries: header.entries)
        } catch let e as BackupError {
            throw e
        } catch let e as StorageError {
            throw Self.storageError(e, doing: "reading the header of \(name)")
        } catch let e as FormatError {
            throw BackupError(.dataDamaged, object: name, message: "\(name) is damaged: \(e.message)", underlying: e)
        } catch {
            throw BackupError(.dataDamaged, object: name, message: "\(name) is damaged: \(error)")
        }
    }
}
