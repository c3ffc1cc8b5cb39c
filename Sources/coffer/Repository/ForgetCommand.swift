import ArgumentParser
import CofferBackup
import Foundation

/// `coffer forget [ID...] [--keep-* ...] [--group-by ...] [--host H] [--tag T] [--path P] [--dry-run] [--prune]`
struct ForgetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "forget",
        abstract: "Remove snapshots that a keep policy does not keep, or the snapshots named (data goes with `prune`).",
        discussion: """
        As restic: snapshots are grouped (by host and paths unless --group-by says otherwise) and the \
        policy applies to each group on its own; a snapshot is kept when any rule keeps it. Only the \
        snapshots that --host, --tag and --path select are considered. Each device's newest snapshot \
        is always kept (it anchors rollback detection). Give at least one --keep-* rule, or snapshot ids.
        """)

    @OptionGroup var global: GlobalOptions

    @Argument(help: ArgumentHelp("Snapshots to forget (ids or unique prefixes of at least 4 hex digits), instead of a policy.", valueName: "snapshot"))
    var snapshots: [String] = []

    @Option(name: .customLong("keep-last"), help: ArgumentHelp("Keep the newest N snapshots.", valueName: "n"))
    var keepLast: Int?
    @Option(name: .customLong("keep-hourly"), help: ArgumentHelp("Keep the newest snapshot of each of the last N hours that have one.", valueName: "n"))
    var keepHourly: Int?
    @Option(name: .customLong("keep-daily"), help: ArgumentHelp("... of each of the last N days.", valueName: "n"))
    var keepDaily: Int?
    @Option(name: .customLong("keep-weekly"), help: ArgumentHelp("... of each of the last N ISO weeks.", valueName: "n"))
    var keepWeekly: Int?
    @Option(name: .customLong("keep-monthly"), help: ArgumentHelp("... of each of the last N months.", valueName: "n"))
    var keepMonthly: Int?
    @Option(name: .customLong("keep-yearly"), help: ArgumentHelp("... of each of the last N years.", valueName: "n"))
    var keepYearly: Int?
    @Option(name: .customLong("keep-within"), help: ArgumentHelp(
        "Keep every snapshot made within this span before the group's newest one (e.g. 7d, 1y6m, 36h).", valueName: "duration"))
    var keepWithin: String?
    @Option(name: .customLong("keep-tag"), help: ArgumentHelp(
        "Keep every snapshot that has all these tags (comma-separated; repeatable: any list).", valueName: "taglist"))
    var keepTag: [String] = []

    @Option(name: .customLong("group-by"), help: ArgumentHelp(
        "Group snapshots by these fields: host, paths, tags, comma-separated; '' for one group.", valueName: "fields"))
    var groupBy: String = "host,paths"
    @Option(name: .customLong("host"), help: ArgumentHelp("Only snapshots of this host (repeatable).", valueName: "host"))
    var hosts: [String] = []
    @Option(name: .customLong("tag"), help: ArgumentHelp("Only snapshots that have all these tags (comma-separated; repeatable: any list).", valueName: "taglist"))
    var tags: [String] = []
    @Option(name: .customLong("path"), help: ArgumentHelp("Only snapshots that include this source path (repeatable: all of them).", valueName: "path"))
    var paths: [String] = []

    @Flag(name: [.customShort("n"), .short, .customLong("dry-run")], help: "Only show what would be removed, and why each snapshot is kept.")
    var dryRun = false

    @Flag(name: .customLong("prune"), help: "Run `prune` afterwards.")
    var runPrune = false

    @OptionGroup var prune: PruneOptions

    @Flag(name: .long, help: "Print the result as JSON on stdout.")
    var json = false

    static func tagLists(_ values: [String]) -> [[String]] {
        values.map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } }.filter { !$0.isEmpty }
    }

    func policy() throws -> ForgetPolicy {
        var p = ForgetPolicy(keepLast: keepLast, keepHourly: keepHourly, keepDaily: keepDaily, keepWeekly: keepWeekly,
                             keepMonthly: keepMonthly, keepYearly: keepYearly,
                             keepWithin: try keepWithin.map { try CalendarSpan(parsing: $0) },
                             keepTags: Self.tagLists(keepTag), groupBy: try SnapshotGrouping(parsing: groupBy),
                             hosts: hosts, tags: Self.tagLists(tags), paths: paths)
        p.timeZone = .current  // restic's calendar: the local one
        return p
    }

    func validate() throws {
        for v in [keepLast, keepHourly, keepDaily, keepWeekly, keepMonthly, keepYearly].compactMap({ $0 }) where v < 0 {
            throw ValidationError("--keep-* values cannot be negative")
        }
        do { _ = try policy() } catch let e as BackupError { throw ValidationError(e.message) }
        try prune.validate()
        // "Give at least one rule" is checked in run(): here it would hide an unknown option's name.
    }

    func run() async throws {
        let access = RepositoryAccess(global)
        try await ErrorReport.run(logger: access.logger) {
            let policy = try policy()
            let filtered = !hosts.isEmpty || !tags.isEmpty || !paths.isEmpty
            if !snapshots.isEmpty, !policy.isEmpty || filtered {
                throw CLIError(.usage, "give snapshot ids or keep rules and filters, not both",
                               hint: "Ids name exactly the snapshots to forget; rules and filters choose them.")
            }
            if snapshots.isEmpty, policy.isEmpty {
                throw CLIError(.usage, "give at least one rule, e.g. --keep-last 10, or the ids of the snapshots to forget")
            }
            return try await access.withRepository { repo in
                try await HeadAnchor.checkIfConfigured(repo, access: access, doing: "the forget", action: "forget snapshots in this repository")
                let result = snapshots.isEmpty
                    ? try await repo.forget(policy: policy, dryRun: dryRun)
                    : try await repo.forget(snapshots: snapshots, dryRun: dryRun)
                var pruneReport: PruneReport?
                if runPrune, !dryRun {
                    let reporter = ProgressReporter(action: "prune", text: !json && !global.noProgress, json: false)
                    defer { reporter.clear() }
                    pruneReport = try await repo.prune(mode: prune.mode, progress: reporter.workProgress)
                }
                if json {
                    try JSONOutput.print(ForgetJSON(result, dryRun: dryRun, prune: pruneReport))
                    return .ok
                }
                printForget(result, explicit: !snapshots.isEmpty)
                let verb = dryRun ? "would be removed" : "removed"
                Terminal.line("\(result.kept.count) snapshot\(result.kept.count == 1 ? "" : "s") kept, \(result.removed.count) \(verb)"
                    + (dryRun ? "" : " (\(Units.bytes(result.bytesFreed)) of snapshot objects freed)"))
                if let pruneReport {
                    printPrune(pruneReport)
                    Terminal.line("in all \(Units.bytes(result.bytesFreed + pruneReport.bytesFreed)) freed")
                } else if !dryRun, !result.removed.isEmpty {
                    Terminal.line("run `coffer prune` to free the space their data used")
                }
                return .ok
            }
        }
    }

    /// restic's listing: per group, the kept snapshots with their reasons, then the removed ones.
    private func printForget(_ r: ForgetResult, explicit: Bool) {
        for g in r.groups {
            if !explicit {
                var fields: [String] = []
                if let h = g.host { fields.append("host [\(h)]") }
                if let p = g.paths { fields.append("paths [\(p.joined(separator: ", "))]") }
                if let t = g.tags { fields.append("tags [\(t.joined(separator: ", "))]") }
                Terminal.line(fields.isEmpty ? "snapshots:" : "snapshots for (\(fields.joined(separator: ", "))):")
                Terminal.line("keep \(g.kept.count) snapshot\(g.kept.count == 1 ? "" : "s"):")
                if !g.kept.isEmpty {
                    Terminal.line(pad("ID", 8) + "  " + pad("Time", 19) + "  " + pad("Host", 16) + "  " + pad("Reasons", 22) + "  Paths")
                    for k in g.kept {
                        let s = k.snapshot
                        Terminal.line(pad(s.shortID, 8) + "  " + pad(Units.localTime(s.time), 19) + "  " + pad(s.hostname, 16) + "  "
                            + pad(k.reasons.first ?? "", 22) + "  " + s.paths.joined(separator: ", ") + Self.tagSuffix(s))
                        for more in k.reasons.dropFirst() { Terminal.line(String(repeating: " ", count: 49) + more) }
                    }
                }
            }
            if !g.removed.isEmpty {
                Terminal.line("\(dryRun ? "would remove" : "remove") \(g.removed.count) snapshot\(g.removed.count == 1 ? "" : "s"):")
                for s in g.removed {
                    Terminal.line(pad(s.shortID, 8) + "  " + pad(Units.localTime(s.time), 19) + "  " + pad(s.hostname, 16) + "  "
                        + s.paths.joined(separator: ", ") + Self.tagSuffix(s))
                }
            }
            Terminal.line("")
        }
    }

    static func tagSuffix(_ s: SnapshotInfo) -> String { s.tags.isEmpty ? "" : "  [" + s.tags.joined(separator: ", ") + "]" }
}

/// `coffer forget --json`: `kept` and `removed` over all groups (oldest first), and per group
/// restic's `keep`, `remove` and `reasons`.
struct ForgetJSON: Encodable {
    struct Reason: Encodable {
        var snapshot: SnapshotJSON
        var matches: [String]
    }
    struct Group: Encodable {
        var host: String?
        var paths: [String]?
        var tags: [String]?
        var keep: [SnapshotJSON]
        var remove: [SnapshotJSON]
        var reasons: [Reason]
    }
    var kept: [SnapshotJSON]
    var removed: [SnapshotJSON]
    var groups: [Group]
    var dryRun: Bool
    /// Stored bytes of the snapshot objects deleted.
    var bytesFreed: Int64
    var prune: PruneJSON?

    init(_ r: ForgetResult, dryRun: Bool, prune: PruneReport?) {
        kept = r.kept.map(SnapshotJSON.init)
        removed = r.removed.map(SnapshotJSON.init)
        groups = r.groups.map { g in
            Group(host: g.host, paths: g.paths, tags: g.tags, keep: g.kept.map { SnapshotJSON($0.snapshot) },
                  remove: g.removed.map(SnapshotJSON.init),
                  reasons: g.kept.map { Reason(snapshot: SnapshotJSON($0.snapshot), matches: $0.reasons) })
        }
        self.dryRun = dryRun
        bytesFreed = r.bytesFreed
        self.prune = prune.map {
            var p = PruneJSON($0)
            p.messageType = nil
            return p
        }
    }
}
