import ArgumentParser
import CofferBackup
import Foundation

/// `coffer repair index|snapshots`
struct RepairCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "repair",
        abstract: "Get a damaged repository going again (after `coffer check` found damage).",
        discussion: """
        Usual order: `coffer repair index` (finds the damaged packs and stops backups from relying on \
        them), then `coffer backup` of the same sources (uploads again what the sources still have), \
        then `coffer repair snapshots` (drops from the snapshots what is lost for good), then \
        `coffer prune`. Run these while no prune runs on another device.
        """,
        subcommands: [RepairIndexCommand.self, RepairSnapshotsCommand.self])
}

/// `coffer repair index [--json]`
struct RepairIndexCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "index",
        abstract: "Rebuild the index from the packs that verify, dropping what does not.",
        discussion: """
        Reads every pack whole and keeps those whose bytes match their name and whose header and \
        blobs all verify. Blobs of a damaged pack that still verify are copied into new packs; the \
        damaged packs are marked for deletion (`coffer prune` removes them), so the next backup \
        uploads what they held again. One new index replaces every index object, damaged ones included.
        """)

    @OptionGroup var global: GlobalOptions

    @Flag(name: .long, help: "Print the report as JSON on stdout.")
    var json = false

    func run() async throws {
        let access = RepositoryAccess(global)
        try await ErrorReport.run(logger: access.logger) {
            let r = try await access.withRepository { try await $0.repairIndex() }
            if json {
                try JSONOutput.print(RepairIndexJSON(r))
                return .ok
            }
            for p in r.damagedPacks { Terminal.line("damaged: \(p): left out of the index, marked for deletion") }
            for p in r.missingPacks { Terminal.line("missing: \(p): left out of the index") }
            for o in r.damagedIndexObjects { Terminal.line("damaged: \(o): replaced") }
            Terminal.line("""
            repair index: \(r.packsChecked) packs read and verified; \(r.packsIndexed) indexed (\(r.packsAdded) not indexed before), \
            \(r.damagedPacks.count) damaged, \(r.missingPacks.count) missing
              \(r.blobsSalvaged) blobs of damaged packs copied into \(r.packsWritten) new packs; \(r.blobsLost) blobs lost; \
            \(r.indexObjectsReplaced) index objects replaced
            """)
            if r.blobsLost > 0 {
                Terminal.line("next: `coffer backup` of the same sources uploads again what they still have; then `coffer repair snapshots` drops what is lost for good")
            }
            return .ok
        }
    }
}

struct RepairIndexJSON: Encodable {
    var packsChecked: Int
    var packsIndexed: Int
    var packsAdded: Int
    var damagedPacks: [String]
    var missingPacks: [String]
    var blobsSalvaged: Int
    var blobsLost: Int
    var packsWritten: Int
    var indexObjectsReplaced: Int
    var damagedIndexObjects: [String]

    init(_ r: RepairIndexReport) {
        packsChecked = r.packsChecked
        packsIndexed = r.packsIndexed
        packsAdded = r.packsAdded
        damagedPacks = r.damagedPacks
        missingPacks = r.missingPacks
        blobsSalvaged = r.blobsSalvaged
        blobsLost = r.blobsLost
        packsWritten = r.packsWritten
        indexObjectsReplaced = r.indexObjectsReplaced
        damagedIndexObjects = r.damagedIndexObjects
    }
}

/// `coffer repair snapshots [--dry-run] [--json]`
struct RepairSnapshotsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshots",
        abstract: "Rewrite the snapshots whose data is gone, dropping (and listing) the lost files.",
        discussion: """
        A file with any piece of data in no index is dropped; a folder whose listing cannot be read \
        is kept empty; everything else restores as before. Each such snapshot is replaced by a new \
        one (same time, host and paths, tag `repaired`). Run `coffer repair index` first.
        """)

    @OptionGroup var global: GlobalOptions

    @Flag(name: [.short, .customLong("dry-run")], help: "Only list what would be dropped.")
    var dryRun = false

    @Flag(name: .long, help: "Print the report as JSON on stdout.")
    var json = false

    func run() async throws {
        let access = RepositoryAccess(global)
        try await ErrorReport.run(logger: access.logger) {
            let r = try await access.withRepository { repo in
                if !dryRun {
                    try await HeadAnchor.checkIfConfigured(repo, access: access, doing: "the repair", action: "repair snapshots in this repository")
                }
                return try await repo.repairSnapshots(dryRun: dryRun)
            }
            if json {
                try JSONOutput.print(RepairSnapshotsJSON(r))
                return .ok
            }
            for s in r.repaired {
                let head = dryRun ? "would rewrite snapshot \(s.oldID.prefix(8))"
                    : "snapshot \(s.oldID.prefix(8)) replaced by \(s.newID.map { String($0.prefix(8)) } ?? "?")"
                Terminal.line("\(head): \(s.lost.count) lost entr\(s.lost.count == 1 ? "y" : "ies") dropped")
                for p in s.lost { Terminal.line("  lost: \(p)") }
            }
            Terminal.line("repair snapshots: \(r.snapshotsChecked) snapshots checked, \(r.repaired.count) \(dryRun ? "would be " : "")rewritten")
            return .ok
        }
    }
}

struct RepairSnapshotsJSON: Encodable {
    struct Item: Encodable {
        var oldID: String
        var newID: String?
        var lost: [String]
    }
    var snapshotsChecked: Int
    var dryRun: Bool
    var treesWritten: Int
    var repaired: [Item]

    init(_ r: RepairSnapshotsReport) {
        snapshotsChecked = r.snapshotsChecked
        dryRun = r.dryRun
        treesWritten = r.treesWritten
        repaired = r.repaired.map { Item(oldID: $0.oldID, newID: $0.newID, lost: $0.lost) }
    }
}
