import Foundation
import Synchronization
import CofferCore
import CofferStorage
import CofferPosix

extension Engine {
    func backupStream(repository: Repository, paths: [String], options: BackupOptions) -> AsyncThrowingStream<BackupEvent, any Error> {
        AsyncThrowingStream(bufferingPolicy: .unbounded) { continuation in
            let run = BackupRun(engine: self, paths: paths, options: options, continuation: continuation)
            continuation.onTermination = { reason in
                if case .cancelled = reason { run.cancelled.store(true, ordering: .relaxed) }
            }
            let t = Thread {
                do {
                    let summary = try run.run()
                    continuation.yield(.finished(summary))
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            t.stackSize = 4 << 20
            t.start()
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
