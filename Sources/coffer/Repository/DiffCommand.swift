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
            let result = DiffJSON(try await access.withRepository { repo in try await repo.diff(first, second) })
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

/// `coffer diff --json`: the changes in path order, then totals (docs/schemas/diff.json).
struct DiffJSON: Encodable {
    struct Change: Encodable {
        /// `+`, `-`, `M` or `U`.
        var change: String
        var path: String
        /// file, directory, symlink or fifo (the new one for `M`).
        var type: String
    }

    struct Totals: Encodable {
        var filesAdded: Int
        var filesRemoved: Int
        var filesModified: Int
        var directoriesAdded: Int
        var directoriesRemoved: Int
        var metadataChanged: Int
        var bytesAdded: Int64
        var bytesRemoved: Int64
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

    init(_ d: SnapshotDiff) {
        snapshot1 = d.from.id
        snapshot2 = d.to.id
        changes = d.changes.map { Change(change: $0.kind.rawValue, path: $0.path, type: $0.type.rawValue) }
        let t = d.totals
        totals = Totals(filesAdded: t.filesAdded, filesRemoved: t.filesRemoved, filesModified: t.filesModified,
                        directoriesAdded: t.directoriesAdded, directoriesRemoved: t.directoriesRemoved,
                        metadataChanged: t.metadataChanged, bytesAdded: t.bytesAdded, bytesRemoved: t.bytesRemoved)
    }
}
