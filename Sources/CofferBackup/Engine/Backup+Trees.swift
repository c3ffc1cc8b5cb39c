import Foundation
import Synchronization
import CofferCore
import CofferStorage
import CofferPosix

/// The backup's fourth stage: the directory listings (trees), bottom up, stored as blobs.
extension BackupRun {
    // MARK: Trees

    /// Stores the trees of the walked entries, bottom up; returns the root tree's id.
    func storeTrees(_ top: [ScanEntry]) async throws(BackupError) -> ChunkID {
        let deflater = Deflater(level: engine.config.parameters.compressionLevel)
        var rootNodes: [TreeNode] = []
        for entry in top {
            if let n = try await node(for: entry, deflater: deflater) { rootNodes.append(n) }
        }
        return try await storeTree(Tree(nodes: rootNodes), deflater: deflater)
    }

    func storeTree(_ tree: Tree, deflater: Deflater) async throws(BackupError) -> ChunkID {
        let bytes = tree.encoded()
        let id = engine.keys.chunkID(of: bytes)
        pipe.producedTrees.withLock { $0[id] = bytes }
        if claim(id) {
            // The encoded tree, and room for it compressed, in buffers that stay valid while the
            // pack's slot is awaited.
            let raw = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, 2 * bytes.count), alignment: 16)
            defer { raw.deallocate() }
            bytes.withUnsafeBytes { raw.copyMemory(from: $0) }
            let scratch = UnsafeMutableRawBufferPointer(rebasing: raw[bytes.count...])
            do {
                try await packs.add(type: .tree, id: id, plaintext: UnsafeRawBufferPointer(rebasing: raw[0..<bytes.count]),
                                    compress: engine.compresses, deflater: deflater, scratch: scratch)
            } catch let e as BackupError {
                throw e
            } catch {
                throw BackupError(.invalidArgument, message: "a directory listing is too large to store: \(error)")
            }
        }
        return id
    }

    func node(for entry: ScanEntry, deflater: Deflater) async throws(BackupError) -> TreeNode? {
        switch entry {
        case .reused(let n), .symlink(let n):
            return n
        case .file(let job):
            return job.state.withLock { $0.failure == nil ? $0.node : nil }
        case .directory(let dir):
            var nodes: [TreeNode] = []
            var below: UInt64 = 0
            for c in dir.children {
                guard let n = try await node(for: c, deflater: deflater) else { continue }
                nodes.append(n)
                // Counted so that a restore that cannot read this listing still knows what it held.
                below += n.kind == .directory ? (n.entriesBelow ?? 0) : 1
            }
            var n = dir.node
            n.subtree = try await storeTree(Tree(nodes: nodes), deflater: deflater)
            n.entriesBelow = below
            return n
        }
    }
}
