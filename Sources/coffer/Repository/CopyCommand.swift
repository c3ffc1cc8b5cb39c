import ArgumentParser
import CofferBackup
import Foundation

/// `coffer copy --from-repo SOURCE [SNAPSHOT...]`: snapshots from another repository into this one.
struct CopyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "copy",
        abstract: "Copy snapshots from another repository into this one (-r), re-encrypted under this repository's key.",
        discussion: """
        The source is --from-repo (or COFFER_FROM_REPO), opened with --from-key-file, COFFER_FROM_KEY_FILE, \
        COFFER_FROM_KEY or this device's key file for it; the destination is the repository of -r/--repo. \
        Every blob is read and verified under the source's key, then identified and encrypted under the \
        destination's key and written only when the destination does not hold it yet. Snapshots an \
        earlier copy brought over are recognised and skipped, and what they hold is not read again, so \
        copying every day is incremental. Copied snapshots keep their time, host, paths and tags, and form \
        their own chain in the destination (a writer derived from the source's). Without a snapshot \
        argument every snapshot is copied. Safe to interrupt: what was uploaded is reused by the next copy.
        """)

    @OptionGroup var global: GlobalOptions

    @Option(name: .customLong("from-repo"), help: ArgumentHelp("The repository to copy from (a location as for --repo). Default: $COFFER_FROM_REPO.", valueName: "location"))
    var fromRepo: String?

    @Option(name: .customLong("from-key-file"), help: ArgumentHelp("A file holding the source repository's 64-digit key (else $COFFER_FROM_KEY_FILE, $COFFER_FROM_KEY, or this device's key file for it).", valueName: "file"))
    var fromKeyFile: String?

    @Argument(help: ArgumentHelp("Snapshots to copy: latest, ids or id prefixes (default: all).", valueName: "snapshot"))
    var snapshots: [String] = []

    @Flag(name: .long, help: "Print JSON Lines on stdout: status lines while copying, then the summary.")
    var json = false

    @Flag(name: .shortAndLong, help: "Print nothing but errors (no progress, no summary; with --json the summary line only).")
    var quiet = false

    func run() async throws {
        let access = RepositoryAccess(global)
        let environment = ProcessInfo.processInfo.environment
        let from = fromRepo ?? environment["COFFER_FROM_REPO"].flatMap { $0.isEmpty ? nil : $0 }
        try await ErrorReport.run(logger: access.logger) {
            guard let from else {
                throw CLIError(.usage, "no repository to copy from", hint: "Use --from-repo LOCATION or set COFFER_FROM_REPO; the destination is -r/--repo.")
            }
            let source = access.sourceAccess(repo: from, keyFile: fromKeyFile)
            return try await source.withRepository { src in
                try await HeadAnchor.checkIfConfigured(src, access: source, doing: "the copy", action: "copy from this repository")
                return try await access.withRepository { dst in
                    let anchor = try await HeadAnchor.checkIfConfigured(dst, access: access, doing: "the copy", action: "copy into this repository")
                    let reporter = ProgressReporter(action: "copy", text: !quiet && !json && !global.noProgress,
                                                    json: json && !quiet && !global.noProgress)
                    let selectors = snapshots
                    let summary: CopySummary
                    do {
                        summary = try await Interrupts.cancellingOnSignals {
                            try await src.copy(snapshots: selectors, to: dst) { p in
                                reporter.update(done: p.blobsDone, total: p.blobsTotal, unit: "blobs", bytesDone: p.bytesDone,
                                                bytesTotal: p.bytesTotal, elapsed: p.elapsed,
                                                step: "snapshot \(min(p.snapshotsDone + 1, p.snapshotsTotal)) of \(p.snapshotsTotal)")
                            }
                        }
                    } catch {
                        reporter.clear()
                        throw error
                    }
                    reporter.clear()
                    // The copies' chains are new writers in the destination: anchor their newest heads
                    // so that a device recovering from the vault notices a rollback that hides them.
                    if summary.snapshotsCopied > 0, let anchor {
                        let written = Set(summary.snapshots.filter { !$0.alreadyPresent }.map(\.destinationID))
                        await anchor.anchorWriters(of: written, in: dst)
                    }
                    if json {
                        try JSONOutput.print(CopyJSON(summary, source: src.storage.location, destination: dst.storage.location))
                    } else if !quiet {
                        for s in summary.snapshots {
                            Terminal.line("\(s.alreadyPresent ? "already there" : "copied") \(s.sourceID.prefix(8)) → \(s.destinationID.prefix(8))  \(HeadAnchor.format(s.time))  \(s.hostname)  \(s.paths.joined(separator: ", "))")
                        }
                        Terminal.line("""
                        \(plural(summary.snapshotsCopied, "snapshot")) copied, \(summary.snapshotsAlreadyPresent) already there; \
                        \(plural(summary.blobsRead, "blob")) read, \(summary.blobsWritten) new in the destination, \
                        \(Units.bytes(summary.bytesWritten)) uploaded in \(Units.seconds(summary.duration.seconds))
                        """)
                    }
                    return CofferExitCode.ok
                }
            }
        }
    }
}

extension RepositoryAccess {
    /// The access to `coffer copy`'s source: `repo` and `keyFile`, and from the environment
    /// COFFER_FROM_KEY_FILE and COFFER_FROM_KEY in place of COFFER_KEY_FILE and COFFER_KEY (the
    /// destination's key never opens the source by accident). Device key files, the vault and the
    /// network settings are shared.
    func sourceAccess(repo: String, keyFile: String?) -> RepositoryAccess {
        var opts = options
        opts.repo = repo
        opts.keyFile = keyFile
        var env = environment
        for name in ["COFFER_REPO", "COFFER_KEY", "COFFER_KEY_FILE"] { env[name] = nil }
        env["COFFER_KEY_FILE"] = environment["COFFER_FROM_KEY_FILE"]
        env["COFFER_KEY"] = environment["COFFER_FROM_KEY"]
        var access = RepositoryAccess(opts, environment: env)
        access.keyOptions = "--from-key-file FILE or COFFER_FROM_KEY"
        return access
    }
}

extension HeadAnchor {
    /// Anchors the newest snapshot of each writer that made one of `snapshotIDs` (a copy's chains).
    func anchorWriters(of snapshotIDs: Set<String>, in repo: Repository) async {
        for outcome in await guardian.anchorWriters(of: snapshotIDs, in: repo) { Self.say(outcome) }
    }
}

/// `coffer copy --json`: the summary line (docs/schemas/copy.json).
struct CopyJSON: Encodable {
    struct Item: Encodable {
        var sourceId: String
        var destinationId: String
        var alreadyPresent: Bool
        var time: Date
        var hostname: String
        var paths: [String]
    }
    var messageType = "summary"
    var source: String
    var destination: String
    var snapshots: [Item]
    var snapshotsCopied: Int
    var snapshotsAlreadyPresent: Int
    var blobsRead: Int
    var blobsWritten: Int
    var bytesWritten: Int64
    var durationSeconds: Double

    init(_ s: CopySummary, source: String, destination: String) {
        self.source = source
        self.destination = destination
        snapshots = s.snapshots.map {
            Item(sourceId: $0.sourceID, destinationId: $0.destinationID, alreadyPresent: $0.alreadyPresent,
                 time: $0.time, hostname: $0.hostname, paths: $0.paths)
        }
        snapshotsCopied = s.snapshotsCopied
        snapshotsAlreadyPresent = s.snapshotsAlreadyPresent
        blobsRead = s.blobsRead
        blobsWritten = s.blobsWritten
        bytesWritten = s.bytesWritten
        durationSeconds = s.duration.seconds
    }
}
