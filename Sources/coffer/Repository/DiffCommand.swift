import ArgumentParser
import CofferBackup
import Foundation

/// `coffer diff SNAP1 SNAP2`
struct DiffCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "diff",
        abstract: "Show what changed between two snapshots.",
        discussion: """
            Each changed path is printed with a mark, as restic does: `+` added, `-` removed, `M` content \
            changed (file content, symlink target or type), `U` only metadata changed (mode, mtime, owner). \
            Directories are marked when added or removed (with a trailing /); a directory whose entries \
            changed is not itself listed (its mtime is ignored; a changed mode or owner is `U`). The totals count files and directories added, removed and \
            changed, and the bytes of content blobs only in SNAP2 (added) or only in SNAP1 (removed).
            """)

    @OptionGroup var global: GlobalOptions

    @Argument(help: ArgumentHelp("The older snapshot: latest, an id, or an id prefix.", valueName: "snapshot1"))
    var first: String

    @Argument(help: ArgumentHelp("The newer snapshot.", valueName: "snapshot2"))
    var second: String

    @Flag(name: .long, help: "Print the changes and totals as JSON on stdout.")
    var json = false

    func run() async throws {
        let access = RepositoryAccess(global)
        try await ErrorReport.run(logger: access.logger) {
            let result = try await access.withRepository { repo in
                let a = try await repo.snapshot(matching: first)
                let b = try await repo.snapshot(matching: second)
                let ea = try await repo.entries(snapshot: a.id)
                let eb = try await repo.entries(snapshot: b.id)
                return SnapshotDiff.compute(repo: repo, from: a, to: b, old: ea, new: eb)
            }
            if json {
                try JSONOutput.print(result)
                return .ok
            }
            Terminal.line("comparing snapshot \(result.snapshot1.prefix(8)) to \(result.snapshot2.prefix(8)):")
            Terminal.line()
            for c in result.changes {
                Terminal.line("\(c.change)    \(c.path)\(c.type == "directory" ? "/" : "")")
            }
            let t = result.totals
            Terminal.line()
            Terminal.line("Files:       \(t.filesAdded) new, \(t.filesRemoved) removed, \(t.filesModified) changed")
            Terminal.line("Dirs:        \(t.directoriesAdded) new, \(t.directoriesRemoved) removed")
            Terminal.line("Metadata:    \(t.metadataChanged) changed")
            Terminal.line("Added:       \(Units.bytes(t.bytesAdded))")
            Terminal.line("Removed:     \(Units.bytes(t.bytesRemoved))")
            return .ok
        }
    }
}

/// `coffer diff --json`: the changes in path order, then totals.
struct SnapshotDiff: Encodable {
    struct Change: Encodable {
        /// `+`, `-`, `M` or `U`.
        var change: String
        var path: String
        /// file, directory, symlink or fifo (the new one for `M`).
        var type: String
        enum CodingKeys: String, CodingKey { case change, path, type }
    }

    struct Totals: Encodable {
        var filesAdded = 0
        var filesRemoved = 0
        var filesModified = 0
        var directoriesAdded = 0
        var directoriesRemoved = 0
        var metadataChanged = 0
        var bytesAdded: Int64 = 0
        var bytesRemoved: Int64 = 0
        enum CodingKeys: String, CodingKey {
            case filesAdded = "files_added", filesRemoved = "files_removed", filesModified = "files_modified"
            case directoriesAdded = "directories_added", directoriesRemoved = "directories_removed"
            case metadataChanged = "metadata_changed", bytesAdded = "bytes_added", bytesRemoved = "bytes_removed"
        }
    }

    var snapshot1: String
    var snapshot2: String
    var changes: [Change]
    var totals: Totals

    enum CodingKeys: String, CodingKey { case snapshot1 = "snapshot_1", snapshot2 = "snapshot_2", changes, totals }

    static func compute(repo: Repository, from a: SnapshotInfo, to b: SnapshotInfo,
                        old: [SnapshotEntry], new: [SnapshotEntry]) -> SnapshotDiff {
        let before = Dictionary(old.map { ($0.info.path, $0) }, uniquingKeysWith: { x, _ in x })
        let after = Dictionary(new.map { ($0.info.path, $0) }, uniquingKeysWith: { x, _ in x })
        var changes: [Change] = []
        var t = Totals()
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
                changes.append(Change(change: "+", path: path, type: n.info.kind.rawValue))
                count(n, added: true)
            case (let o?, nil):
                changes.append(Change(change: "-", path: path, type: o.info.kind.rawValue))
                count(o, added: false)
            case (let o?, let n?):
                if o.info.kind == .directory, n.info.kind == .directory {
                    // A directory's mtime changes with its entries: only mode and owner count.
                    if o.info.mode != n.info.mode || o.uid != n.uid || o.gid != n.gid {
                        changes.append(Change(change: "U", path: path, type: "directory"))
                        t.metadataChanged += 1
                    }
                } else if o.info.kind == .directory || n.info.kind == .directory {
                    // A directory replaced by a file (or the reverse): removed and added.
                    changes.append(Change(change: "-", path: path, type: o.info.kind.rawValue))
                    count(o, added: false)
                    changes.append(Change(change: "+", path: path, type: n.info.kind.rawValue))
                    count(n, added: true)
                } else if !o.sameContent(as: n) {
                    changes.append(Change(change: "M", path: path, type: n.info.kind.rawValue))
                    t.filesModified += 1
                } else if !o.sameMetadata(as: n) {
                    changes.append(Change(change: "U", path: path, type: n.info.kind.rawValue))
                    t.metadataChanged += 1
                }
            case (nil, nil):
                break
            }
        }
        let blobsBefore = Set(old.flatMap(\.content))
        let blobsAfter = Set(new.flatMap(\.content))
        for id in blobsAfter.subtracting(blobsBefore) { t.bytesAdded += Int64(repo.blobStat(id)?.length ?? 0) }
        for id in blobsBefore.subtracting(blobsAfter) { t.bytesRemoved += Int64(repo.blobStat(id)?.length ?? 0) }
        return SnapshotDiff(snapshot1: a.id, snapshot2: b.id, changes: changes, totals: t)
    }
}
