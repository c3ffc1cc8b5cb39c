#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CofferCore

/// Blobs packed one after the other into packs of the repository's target size, each pack created
/// (conditionally, with retries) as soon as it fills: prune's repack and both repairs. A backup
/// packs through its own pipeline (PackPool, Uploader).
struct PackSink {
    private let engine: Engine
    private var writer: PackWriter?
    /// The packs created so far: the index written next must name them.
    private(set) var packs: [IndexedPack] = []

    init(_ engine: Engine) { self.engine = engine }

    /// Adds one blob, and creates the pack when it reaches the target size.
    /// - Parameter refused: the error to throw when the pack writer refuses the blob.
    mutating func add(type: BlobType, id: ChunkID, plaintext: Data, compress: Bool,
                      refused: (FormatError) -> BackupError) async throws(BackupError) {
        if writer == nil { writer = PackWriter(keys: engine.keys, parameters: engine.config.parameters) }
        do { try writer!.add(type: type, id: id, plaintext: plaintext, compress: compress) } catch { throw refused(error) }
        if writer!.byteCount >= engine.config.parameters.targetPackSize { try await flush() }
    }

    /// Creates the pack in progress, if it holds any blob.
    mutating func flush() async throws(BackupError) {
        guard let w = writer, w.blobCount > 0 else { return }
        writer = nil
        let f = w.finish()
        try await engine.objects.create(f.id.packName, data: f.bytes, id: f.id)
        packs.append(IndexedPack(id: f.id, salt: f.salt, length: f.bytes.count, entries: f.entries))
    }
}
