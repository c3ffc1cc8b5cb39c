#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CofferCore
import CofferStorage

/// A decoded repository object for debugging (`coffer cat`): a small JSON value tree. It never
/// holds key material: the config shows its parameters, not its keys; packs and indexes their
/// entries, not their salts.
public indirect enum InspectValue: Sendable, Hashable, Encodable {
    case string(String)
    case int(Int64)
    case bool(Bool)
    case null
    case array([InspectValue])
    case object([String: InspectValue])

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .string(let s): try c.encode(s)
        case .int(let i): try c.encode(i)
        case .bool(let b): try c.encode(b)
        case .null: try c.encodeNil()
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }
}

/// What `Repository.inspect` can show.
public enum InspectKind: String, Sendable, CaseIterable {
    case config, snapshot, index, pack, blob, tree
}

extension Repository {
    /// Decodes one object: the config (no id), a snapshot (latest, id or prefix), an index object,
    /// a pack's header (full ids), a blob (its index record and plaintext in base64) or a tree.
    /// Everything read is verified as usual.
    /// - Throws: `.invalidArgument` (malformed id), `.snapshotNotFound`, `.dataMissing`,
    ///   `.dataDamaged`, `.storage`.
    public func inspect(_ kind: InspectKind, id: String?) async throws(BackupError) -> InspectValue {
        let e = engine
        func need() throws(BackupError) -> String {
            guard let id, !id.isEmpty else { throw BackupError(.invalidArgument, message: "\(kind.rawValue) needs an id") }
            return id.lowercased()
        }
        func objectID() throws(BackupError) -> ObjectID {
            let hex = try need()
            guard let o = ObjectID(hex: hex) else {
                throw BackupError(.invalidArgument, message: "\"\(hex)\" is not a full \(kind.rawValue) id (64 hex digits)")
            }
            return o
        }
        switch kind {
        case .config:
            let c = e.config
            let p = c.parameters
            return .object([
                "repository_id": .string(e.repositoryID),
                "format_version": .int(Int64(c.formatVersion)),
                "feature_flags": .int(Int64(c.featureFlags)),
                "object_prefix": .string(c.usesGenerationPrefix ? c.objectPrefix : ""),
                "file_chunk_size": .int(Int64(p.fileChunkSize)),
                "sqlite_group_size": .int(Int64(p.sqliteGroupSize)),
                "target_pack_size": .int(Int64(p.targetPackSize)),
                "compression": .string(p.compression == .none ? "none" : "deflate"),
                "compression_level": .int(Int64(p.compressionLevel)),
                "padding": .string(p.padding == .none ? "none" : "padme"),
                "padding_floor": .int(Int64(p.paddingFloor)),
            ])
        case .snapshot:
            let (id, s) = try e.resolve(try need(), in: try await e.loadSnapshots())
            return .object([
                "id": .string(id.hex),
                "time": .string(s.time.formatted(.iso8601)),
                "writer_id": .string(Hex.string(s.writerID)),
                "seq": .int(Int64(clamping: s.seq)),
                "prev": s.prev.map { InspectValue.string($0.hex) } ?? .null,
                "parent": s.parent.map { InspectValue.string($0.hex) } ?? .null,
                "root": .string(s.root.hex),
                "hostname": .string(s.hostname),
                "paths": .array(s.paths.map { .string($0) }),
                "tags": .array(s.tags.map { .string($0) }),
                "full_paths": .bool(s.fullPaths),
                "summary": .object([
                    "files": .int(Int64(clamping: s.summary.files)),
                    "directories": .int(Int64(clamping: s.summary.directories)),
                    "bytes_total": .int(Int64(clamping: s.summary.bytesTotal)),
                    "bytes_new": .int(Int64(clamping: s.summary.bytesNew)),
                    "bytes_stored": .int(Int64(clamping: s.summary.bytesStored)),
                    "unreadable": .int(Int64(clamping: s.summary.unreadable)),
                ]),
            ])
        case .index:
            let id = try objectID()
            let plain = try await e.readSealed(id.indexName, id: id, type: .index)
            let f: IndexFile
            do { f = try IndexFile.decode(plain, what: id.indexName) } catch {
                throw BackupError(.dataDamaged, object: id.indexName, message: "\(id.indexName) is damaged: \(error)")
            }
            return .object([
                "id": .string(id.hex),
                "supersedes": .array(f.supersedes.map { .string($0.hex) }),
                "packs": .array(f.packs.map(Self.packValue)),
            ])
        case .pack:
            let id = try objectID()
            let info = try await e.objects.stat(id.packName, doing: "reading \(id.packName)")
            guard let info else {
                throw BackupError(.dataMissing, object: id.packName, message: "\(id.packName) does not exist")
            }
            return Self.packValue(try await e.readPackHeader(id, size: info.size))
        case .blob:
            let hex = try need()
            guard ChunkID(hex: hex) != nil else {
                throw BackupError(.invalidArgument, message: "\"\(hex)\" is not a blob id (64 hex digits)")
            }
            guard let stat = blobStat(hex) else {
                throw BackupError(.dataMissing, object: "blob \(hex)", message: "blob \(hex) is not in the index")
            }
            let data = try await readBlob(hex)
            return .object([
                "id": .string(stat.id),
                "type": .string(stat.kind.rawValue),
                "pack": .string(stat.pack),
                "stored_length": .int(Int64(stat.storedLength)),
                "length": .int(Int64(stat.length)),
                "compressed": .bool(stat.compressed),
                "data_base64": .string(data.base64EncodedString()),
            ])
        case .tree:
            let hex = try need()
            guard let cid = ChunkID(hex: hex) else {
                throw BackupError(.invalidArgument, message: "\"\(hex)\" is not a tree id (64 hex digits)")
            }
            let tree = try await e.readTree(cid)
            return .object([
                "id": .string(cid.hex),
                "nodes": .array(tree.nodes.map { n -> InspectValue in
                    var o: [String: InspectValue] = [
                        "name": .string(n.nameString),
                        "type": .string(Engine.nodeInfo("", n).kind.rawValue),
                        "database": .bool(n.isDatabase),
                        "mode": .string(String(n.mode, radix: 8)),
                        "uid": .int(Int64(n.uid)), "gid": .int(Int64(n.gid)),
                        "mtime": .string(n.modified.formatted(.iso8601)),
                        "inode": .int(Int64(clamping: n.inode)), "device": .int(Int64(clamping: n.device)),
                        "links": .int(Int64(n.links)),
                        "size": .int(Int64(clamping: n.size)),
                    ]
                    switch n.kind {
                    case .file: o["content"] = .array(n.content.map { .string($0.hex) })
                    case .directory:
                        o["subtree"] = n.subtree.map { InspectValue.string($0.hex) } ?? .null
                        o["entries_below"] = n.entriesBelow.map { InspectValue.int(Int64(clamping: $0)) } ?? .null
                    case .symlink: o["link_target"] = .string(String(decoding: n.linkTarget, as: UTF8.self))
                    case .fifo: break
                    }
                    return .object(o)
                }),
            ])
        }
    }

    static func packValue(_ p: IndexedPack) -> InspectValue {
        .object([
            "id": .string(p.id.hex),
            "length": .int(Int64(p.length)),
            "blobs": .array(p.entries.map { b -> InspectValue in
                .object([
                    "id": .string(b.id.hex),
                    "type": .string(b.type == .tree ? "tree" : "data"),
                    "index": .int(Int64(b.index)),
                    "offset": .int(Int64(b.offset)),
                    "stored_length": .int(Int64(b.length)),
                    "length": .int(Int64(b.uncompressedLength)),
                    "compressed": .bool(b.compression != .none),
                ])
            }),
        ])
    }
}
