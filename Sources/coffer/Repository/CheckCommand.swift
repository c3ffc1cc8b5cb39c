import ArgumentParser
import CofferBackup
import Foundation

/// `coffer check [--read-data]`
struct CheckCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Verify the repository and name every damaged or missing object.",
        discussion: """
        Reads and verifies every index, snapshot and tree, locates every blob a snapshot needs, and \
        checks that every indexed pack exists. With --read-data every blob of every pack is decrypted \
        and verified too. Exit code 13 when anything is damaged or missing.
        """)

    @OptionGroup var global: GlobalOptions

    @Flag(name: .customLong("read-data"), help: "Also decrypt and verify every blob of every pack.")
    var readData = false

    @Flag(name: .long, help: "Print the report as JSON on stdout.")
    var json = false

    func run() async throws {
        let access = RepositoryAccess(global)
        try await ErrorReport.run(logger: access.logger) {
            let reporter = ProgressReporter(action: "check", text: !json && !global.noProgress, json: json && !global.noProgress)
            let report: CheckReport
            do {
                report = try await access.withRepository { repo in
                    try await repo.check(readData: readData, progress: reporter.workProgress)
                }
            } catch {
                reporter.clear()
                throw error
            }
            reporter.clear()
            if json {
                try JSONOutput.print(CheckJSON(report, readData: readData))
                return report.isClean ? .ok : .damaged
            }
            for p in report.problems {
                Terminal.line("\(p.kind.rawValue): \(p.object): \(p.detail)")
            }
            var counts = "\(report.snapshotsChecked) snapshots, \(report.treesChecked) trees, \(report.indexObjectsChecked) index objects, \(report.packsChecked) packs"
            if readData { counts += ", \(report.blobsVerified) blobs decrypted and verified" }
            Terminal.line("checked \(counts)")
            if !report.unindexedPacks.isEmpty {
                Terminal.line("\(report.unindexedPacks.count) pack\(report.unindexedPacks.count == 1 ? "" : "s") not in any index (left by an interrupted backup or prune; harmless, `coffer prune` removes them)")
            }
            if !report.temporaryFiles.isEmpty {
                let n = report.temporaryFiles.count
                Terminal.line("\(n) temporary file\(n == 1 ? "" : "s") of unfinished writes (left by an interrupted or killed command, or a write in progress; harmless, `coffer prune` removes them once older than its grace period):")
                for t in report.temporaryFiles.prefix(20) { Terminal.line("  \(t)") }
                if n > 20 { Terminal.line("  … and \(n - 20) more") }
            }
            if !report.conflictCopies.isEmpty {
                let n = report.conflictCopies.count
                Terminal.line("\(n) conflict cop\(n == 1 ? "y" : "ies") made by a syncing drive (iCloud Drive's `NAME 2`; never data: the object under its own name is the one Coffer reads; harmless, delete them when no device is writing):")
                for t in report.conflictCopies.prefix(20) { Terminal.line("  \(t)") }
                if n > 20 { Terminal.line("  … and \(n - 20) more") }
            }
            if report.isClean {
                Terminal.line("no errors found")
                return .ok
            }
            Terminal.err("coffer: \(report.problems.count) damaged or missing object\(report.problems.count == 1 ? "" : "s") found (listed above)\n"
                         + "  To get going again: `coffer repair index`, then a backup of the same sources, then `coffer repair snapshots` (docs/CLI.md)\n")
            return .damaged
        }
    }
}

/// `coffer check --json`.
struct CheckJSON: Encodable {
    struct Problem: Encodable {
        var kind: String
        var object: String
        var detail: String
    }
    var messageType = "summary"
    var clean: Bool
    var readData: Bool
    var snapshotsChecked: Int
    var treesChecked: Int
    var indexObjectsChecked: Int
    var packsChecked: Int
    var blobsVerified: Int
    var unindexedPacks: [String]
    var temporaryFiles: [String]
    var conflictCopies: [String]
    var problems: [Problem]

    init(_ r: CheckReport, readData: Bool) {
        clean = r.isClean
        self.readData = readData
        snapshotsChecked = r.snapshotsChecked
        treesChecked = r.treesChecked
        indexObjectsChecked = r.indexObjectsChecked
        packsChecked = r.packsChecked
        blobsVerified = r.blobsVerified
        unindexedPacks = r.unindexedPacks
        temporaryFiles = r.temporaryFiles
        conflictCopies = r.conflictCopies
        problems = r.problems.map { Problem(kind: $0.kind.rawValue, object: $0.object, detail: $0.detail) }
    }
}
