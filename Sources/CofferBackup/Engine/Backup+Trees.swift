import Foundation
import Synchronization
import CofferCore
import CofferStorage
import CofferPosix

/// The backup's fourth stage: the directory listings (trees), bottom up, stored as blobs.
extension BackupRun {
    // MARK: Trees

    func storeTree(_ tree: Tree, deflater: Deflater) throws(BackupError) -> ChunkID {
        let bytes = tree.encoded()
        let id = engine.keys.chunkID(of: bytes)
        producedTrees.withLock { $0[id] = bytes }
        if claim(id) {
            do {
                try bytes.withUnsafeBytes { raw in
                    try packs.add(type: .tree, id: id, plaintext: raw, compress: engine.compresses, deflater: deflater)
                }
            } catch let e as BackupError {
                throw e
            } catch {
                throw BackupError(.invalidArgument, message: "a directory listing is too large to store: \(error)")
            }
        }
        return id
    }

    func node(for entry: ScanEntry, deflater: Deflater) throws(BackupError) -> TreeNode? {
        switch entry {
        case .reused(let n), .symlink(let n):
            return n
        case .file(let job):
            guard job.failure == nil else { return nil }
            return job.node
        case .directory(let dir):
            var nodes: [TreeNode] = []
            var below: UInt64 = 0
            for c in dir.children {
                guard let n = try node(for: c, deflater: deflater) else { continue }
                nodes.append(n)
                // Counted so that a restore that cannot read this listing still knows what it held.
                below += n.kind == .directory ? (n.entriesBelow ?? 0) : 1
            }
            var n = dir.node
            n.subtree = try storeTree(Tree(nodes: nodes), deflater: deflater)
            n.entriesBelow = below
            return n
        }
    }
}
