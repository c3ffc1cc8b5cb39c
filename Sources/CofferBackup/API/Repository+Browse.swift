#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CofferCore

/// One entry of a snapshot with what identifies its content: what `diff`, `find`, `stats` and `dump`
/// need beyond ``NodeInfo``.
public struct SnapshotEntry: Sendable, Hashable {
    /// Path, kind, size, mode, mtime, link target, as `ls` shows them.
    public var info: NodeInfo
    /// The file's content blobs in order (64 hex digits each); empty for other kinds.
    public var content: [String]
    /// A directory's tree blob (64 hex digits).
    public var subtree: String?
    public var uid: UInt32
    public var gid: UInt32

    /// Same kind, content (blobs or link target) and database flag: only metadata may differ.
    public func sameContent(as other: SnapshotEntry) -> Bool {
        info.kind == other.info.kind && content == other.content && info.linkTarget == other.info.linkTarget
            && info.size == other.info.size && info.isDatabase == other.info.isDatabase
    }

    /// Same mode, mtime, owner.
    public func sameMetadata(as other: SnapshotEntry) -> Bool {
        info.mode == other.info.mode && info.modified == other.info.modified && uid == other.uid && gid == other.gid
    }
}

/// Where one blob is stored, from the index.
public struct BlobStat: Sendable, Hashable {
    public enum Kind: String, Sendable { case data, tree }
    /// 64 hex digits.
    public var id: String
    public var kind: Kind
    /// The pack's object name (`data/xx/<id>`).
    public var pack: String
    /// Bytes stored in the pack (ciphertext and tag, after compression).
    public var storedLength: Int
    /// Plaintext bytes (after decompression).
    public var length: Int
    public var compressed: Bool
}

extension Repository {
    /// Every entry of a snapshot below `path` (the whole snapshot for `nil`), depth first in name
    /// order, with content identity. The snapshot is resolved like ``snapshot(matching:)``.
    /// - Throws: `.snapshotNotFound`, `.pathNotFound`, `.dataDamaged`, `.dataMissing`, `.storage`.
    public func entries(snapshot: String, path: String? = nil) async throws(BackupError) -> [SnapshotEntry] {
        try await engine.entries(snapshot: snapshot, path: path)
    }

    /// The snapshot's root tree blob (64 hex digits).
    /// - Throws: `.snapshotNotFound`, `.dataDamaged`, `.storage`.
    public func rootTree(snapshot: String) async throws(BackupError) -> String {
        try engine.resolve(snapshot, in: try await engine.loadSnapshots()).1.root.hex
    }

    /// The index's record of a blob (`nil` when no indexed pack holds it).
    public func blobStat(_ idHex: String) -> BlobStat? {
        guard let id = ChunkID(hex: idHex), let loc = engine.location(of: id) else { return nil }
        return Self.stat(id, loc)
    }

    /// Every blob of the index, in no particular order.
    public func allBlobs() -> [BlobStat] {
        let all = engine.index.withLock { state in Array(state.blobs) }
        return all.map { Self.stat($0.key, $0.value) }
    }

    static func stat(_ id: ChunkID, _ loc: BlobLocation) -> BlobStat {
        BlobStat(id: id.hex, kind: loc.entry.type == .tree ? .tree : .data, pack: loc.pack.packName,
                 storedLength: loc.entry.length, length: loc.entry.uncompressedLength,
                 compressed: loc.entry.compression != .none)
    }

    /// Reads and verifies one blob's plaintext.
    /// - Throws: `.invalidArgument` (not 64 hex digits), `.dataMissing`, `.dataDamaged`, `.storage`.
    public func readBlob(_ idHex: String) async throws(BackupError) -> Data {
        guard let id = ChunkID(hex: idHex) else {
            throw BackupError(.invalidArgument, message: "\"\(idHex)\" is not a blob id (64 hex digits)")
        }
        return try await engine.readBlob(id)
    }

    /// The entries of a tree blob (paths are the bare names).
    /// - Throws: `.invalidArgument`, `.dataMissing`, `.dataDamaged`, `.storage`.
    public func readTree(_ idHex: String) async throws(BackupError) -> [SnapshotEntry] {
        guard let id = ChunkID(hex: idHex) else {
            throw BackupError(.invalidArgument, message: "\"\(idHex)\" is not a tree id (64 hex digits)")
        }
        return try await engine.readTree(id).nodes.map { Engine.entry($0.nameString, $0) }
    }

    /// Streams a file's content, blob by blob (each verified), to `sink`.
    /// - Throws: `.dataMissing`, `.dataDamaged`, `.storage`, or what `sink` throws (as `.fileSystem`).
    public func readContent(_ entry: SnapshotEntry, to sink: (Data) throws -> Void) async throws(BackupError) {
        for hex in entry.content {
            let data = try await readBlob(hex)
            do { try sink(data) } catch {
                throw BackupError(.fileSystem, path: entry.info.path, message: "writing \(entry.info.path): \(error)")
            }
        }
    }
}

extension Engine {
    static func entry(_ path: String, _ n: TreeNode) -> SnapshotEntry {
        SnapshotEntry(info: nodeInfo(path, n), content: n.content.map(\.hex), subtree: n.subtree?.hex, uid: n.uid, gid: n.gid)
    }

    func entries(snapshot: String, path: String?) async throws(BackupError) -> [SnapshotEntry] {
        let (_, snap) = try resolve(snapshot, in: try await loadSnapshots())
        let comps = try Self.snapshotComponents(path, in: snap)
        let (node, tree) = try await lookup(root: snap.root, components: comps)
        let base = comps.joined(separator: "/")
        if let node, node.kind != .directory { return [Self.entry(base, node)] }
        var out: [SnapshotEntry] = []
        func walk(_ tree: Tree, _ prefix: String) async throws(BackupError) {
            for n in tree.nodes {
                let p = prefix.isEmpty ? n.nameString : prefix + "/" + n.nameString
                out.append(Self.entry(p, n))
                if n.kind == .directory, let sub = n.subtree {
                    try await walk(try await readTree(sub), p)
                }
            }
        }
        if let node { out.append(Self.entry(base, node)) }
        if let tree { try await walk(tree, base) }
        return out
    }
}
