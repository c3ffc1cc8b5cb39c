import ArgumentParser
import CofferBackup
import Foundation

/// Options shared by `prune` and `forget --prune`.
struct PruneOptions: ParsableArguments {
    @Flag(name: .long, help: "Assert that nothing else writes to this repository: delete at once instead of in two phases.")
    var now = false

    @Option(name: .customLong("grace-hours"), help: ArgumentHelp(
        "Two-phase prune: delete marked objects once they have been marked this long, by the storage's clock.", valueName: "hours"))
    var graceHours: Double = 24

    @Option(name: .customLong("grace"), help: ArgumentHelp(
        "The grace period as a duration (90s, 30m, 24h, 7d); overrides --grace-hours. Keep it well above the longest a backup "
            + "can be suspended; periods under 5s do not protect a backup that is suspended while it commits.", valueName: "duration"))
    var grace: String?

    /// `90s`, `30m`, `24h`, `7d` or a plain number of seconds.
    static func seconds(_ text: String) -> Double? {
        let t = text.trimmingCharacters(in: .whitespaces).lowercased()
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("d", 86400)]
        for (suffix, scale) in units where t.hasSuffix(suffix) {
            guard let v = Double(t.dropLast(suffix.count)), v >= 0, v.isFinite else { return nil }
            return v * scale
        }
        guard let v = Double(t), v >= 0, v.isFinite else { return nil }
        return v
    }

    var graceSeconds: Double { grace.flatMap(Self.seconds) ?? graceHours * 3600 }

    var mode: PruneMode {
        now ? .singleWriterNow : .twoPhase(grace: .milliseconds(Int64(graceSeconds * 1000)))
    }

    func validate() throws {
        guard graceHours >= 0 else { throw ValidationError("--grace-hours cannot be negative") }
        if let grace, Self.seconds(grace) == nil {
            throw ValidationError("--grace \"\(grace)\" is not a duration: give a number and a unit, e.g. 90s, 30m, 24h, 7d")
        }
    }
}

/// `coffer prune [--now]`
struct PruneCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prune",
        abstract: "Free the space that no snapshot needs any more.",
        discussion: """
        Locates every blob of every snapshot first (anything damaged or missing stops the prune before \
        anything changes), writes the new index, and only then deletes. By default deletion is in two \
        phases: this run marks, a later run deletes once the grace period has passed on the storage's \
        clock, so a backup running elsewhere is never robbed. With --now (a single writer) it deletes \
        at once.
        """)

    @OptionGroup var global: GlobalOptions
    @OptionGroup var prune: PruneOptions

    @Flag(name: .long, help: "Print the report as JSON on stdout.")
    var json = false

    @Flag(name: .customLong("unsafe-recover-no-free-space"), help: ArgumentHelp(
        "UNSAFE (read docs/CLI.md first): on a storage too full to write to, delete the packs no index lists and no snapshot "
            + "needs, and leftover temporary files, without writing anything; no grace period: only when no other backup runs."))
    var unsafeRecoverNoFreeSpace = false

    func validate() throws {
        try prune.validate()
        if unsafeRecoverNoFreeSpace, prune.grace != nil || prune.graceHours != 24 {
            throw ValidationError("--unsafe-recover-no-free-space has no grace period: do not combine it with --grace or --grace-hours")
        }
    }

    func run() async throws {
        let access = RepositoryAccess(global)
        try await ErrorReport.run(logger: access.logger) {
            let reporter = ProgressReporter(action: "prune", text: !json && !global.noProgress, json: json && !global.noProgress)
            let report: PruneReport
            do {
                report = try await access.withRepository { repo in
                    try await HeadAnchor.checkIfConfigured(repo, access: access, doing: "the prune", action: "prune this repository")
                    if unsafeRecoverNoFreeSpace { return try await repo.pruneUnindexedWithoutWriting() }
                    return try await repo.prune(mode: prune.mode, progress: reporter.workProgress)
                }
            } catch {
                reporter.clear()
                throw error
            }
            reporter.clear()
            if json { try JSONOutput.print(PruneJSON(report)) } else { printPrune(report) }
            return .ok
        }
    }
}

func printPrune(_ r: PruneReport) {
    Terminal.line("""
    prune: \(r.liveSnapshots) live snapshots checked; \(r.packsKept) packs kept, \(r.packsRepacked) repacked
      \(r.objectsMarked) objects marked, \(r.objectsDeleted) deleted (\(Units.bytes(r.bytesFreed)) freed), \(r.objectsPending) waiting for the grace period\
    \(r.packsRescued > 0 ? "\n  \(r.packsRescued) marked packs kept because a newer snapshot needs them" : "")\
    \(r.temporaryFilesRemoved > 0 ? "\n  \(r.temporaryFilesRemoved) temporary files of interrupted writes removed" : "")
    """)
}

/// `coffer prune --json`.
struct PruneJSON: Encodable {
    /// "summary" for `coffer prune --json`; absent inside `forget --prune`'s output.
    var messageType: String? = "summary"
    var liveSnapshots: Int
    var packsKept: Int
    var packsRepacked: Int
    var objectsMarked: Int
    var objectsDeleted: Int
    var bytesFreed: Int64
    var objectsPending: Int
    var packsRescued: Int
    var temporaryFilesRemoved: Int

    init(_ r: PruneReport) {
        liveSnapshots = r.liveSnapshots
        packsKept = r.packsKept
        packsRepacked = r.packsRepacked
        objectsMarked = r.objectsMarked
        objectsDeleted = r.objectsDeleted
        bytesFreed = r.bytesFreed
        objectsPending = r.objectsPending
        packsRescued = r.packsRescued
        temporaryFilesRemoved = r.temporaryFilesRemoved
    }
}
