#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// What changed between two snapshots (`Repository.diff`), as restic's `diff` reports it.
public struct SnapshotDiff: Sendable {
    public struct Change: Sendable, Hashable {
        public enum Kind: String, Sendable, Hashable {
            /// `+`: only in the newer snapshot.
            case added = "+"
            /// `-`: only in the older one.
            case removed = "-"
            /// `M`: the content changed (file content, symlink target or type).
            case modified = "M"
            /// `U`: only metadata changed (mode, mtime, owner; for a directory mode and owner only).
            case metadata = "U"
        }
        public var kind: Kind
        public var path: String
        /// file, directory, symlink or fifo (the new one for `modified`).
        public var type: NodeInfo.Kind
    }

    public struct Totals: Sendable, Hashable {
        public var filesAdded = 0
        public var filesRemoved = 0
        public var filesModified = 0
        public var directoriesAdded = 0
        public var directoriesRemoved = 0
        public var metadataChanged = 0
        /// Plaintext bytes of content blobs only in the newer snapshot.
        public var bytesAdded: Int64 = 0
        /// Plaintext bytes of content blobs only in the older snapshot.
        public var bytesRemoved: Int64 = 0
    }

    public var from: SnapshotInfo
    public var to: SnapshotInfo
    /// In path order (bytewise); a directory replaced by a file (or the reverse) is removed, then added.
    public var changes: [Change]
    public var totals: Totals
}

extension Repository {
    /// What changed from snapshot `first` to snapshot `second` (each `latest`, an id or a prefix).
    /// A directory is listed when added or removed; one whose entries changed is not itself listed
    /// (its mtime follows its entries), but a changed mode or owner is `metadata`.
    public func diff(_ first: String, _ second: String) async throws(BackupError) -> SnapshotDiff {
        let a = try await snapshot(matching: first)
        let b = try await snapshot(matching: second)
        let old = try await entries(snapshot: a.id)
        let new = try await entries(snapshot: b.id)
        let before = Dictionary(old.map { ($0.info.path, $0) }, uniquingKeysWith: { x, _ in x })
        let after = Dictionary(new.map { ($0.info.path, $0) }, uniquingKeysWith: { x, _ in x })
        var changes: [SnapshotDiff.Change] = []
        var t = SnapshotDiff.Totals()
        func count(_ e: SnapshotEntry, added: Bool) {
            switch (e.info.kind, added) {
            case (.directory, true): t.directoriesAdded += 1
            case (.directory, false): t.directoriesRemoved += 1
            case (_, true): t.filesAdded += 1
            case (_, false): t.filesRemoved += 1
            }
        }
        for path in Set(before.keys).union(after.keys).sorted(by: { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }) {
            switch (before[path], after[path]) {
            case (nil, let n?):
                changes.append(.init(kind: .added, path: path, type: n.info.kind))
                count(n, added: true)
            case (let o?, nil):
                changes.append(.init(kind: .removed, path: path, type: o.info.kind))
                count(o, added: false)
            case (let o?, let n?):
                if o.info.kind == .directory, n.info.kind == .directory {
                    // A directory's mtime changes with its entries: only mode and owner count.
                    if o.info.mode != n.info.mode || o.uid != n.uid || o.gid != n.gid {
                        changes.append(.init(kind: .metadata, path: path, type: .directory))
                        t.metadataChanged += 1
                    }
                } else if o.info.kind == .directory || n.info.kind == .directory {
                    changes.append(.init(kind: .removed, path: path, type: o.info.kind))
                    count(o, added: false)
                    changes.append(.init(kind: .added, path: path, type: n.info.kind))
                    count(n, added: true)
                } else if !o.sameContent(as: n) {
                    changes.append(.init(kind: .modified, path: path, type: n.info.kind))
                    t.filesModified += 1
                } else if !o.sameMetadata(as: n) {
                    changes.append(.init(kind: .metadata, path: path, type: n.info.kind))
                    t.metadataChanged += 1
                }
            case (nil, nil):
                break
            }
        }
        let blobsBefore = Set(old.flatMap(\.content))
        let blobsAfter = Set(new.flatMap(\.content))
        for id in blobsAfter.subtracting(blobsBefore) { t.bytesAdded += Int64(blobStat(id)?.length ?? 0) }
        for id in blobsBefore.subtracting(blobsAfter) { t.bytesRemoved += Int64(blobStat(id)?.length ?? 0) }
        return SnapshotDiff(from: a, to: b, changes: changes, totals: t)
    }
}
