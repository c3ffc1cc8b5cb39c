import ArgumentParser
import CofferBackup
import Foundation
import Logging

/// `coffer backup PATH...`
struct BackupCommand: AsyncParsableCommand, Sendable {
    static let configuration = CommandConfiguration(
        commandName: "backup",
        abstract: "Back up files and folders into a new snapshot.",
        discussion: """
        Each PATH becomes an entry of the snapshot named by its last component. Files unchanged since \
        the parent snapshot (same size, mtime, inode and ctime) are not read again; SQLite databases \
        are captured consistently while in use. Unreadable files are reported and skipped: the snapshot \
        is still made and the exit code is 3. --exclude and the other filters follow restic's rules \
        (docs/CLI.md, "Backup filters"); --dry-run lists what would be stored and writes nothing.
        """)

    @OptionGroup var global: GlobalOptions

    @Argument(help: ArgumentHelp("Files or folders to back up.", valueName: "path"))
    var paths: [String] = []

    @Flag(name: .long, help: "Print the summary as JSON on stdout.")
    var json = false

    @Flag(name: .shortAndLong, help: "Print nothing but errors and warnings (no progress, no summary; with --json the summary line only).")
    var quiet = false

    @Flag(name: .long, help: "Read every file again instead of trusting unchanged metadata.")
    var force = false

    @Option(name: .long, help: ArgumentHelp("The parent snapshot for the unchanged-file shortcut (default: automatic).", valueName: "snapshot"))
    var parent: String?

    @Option(name: .long, help: ArgumentHelp("A tag to record in the snapshot (repeatable).", valueName: "tag"))
    var tag: [String] = []

    @Option(name: .long, help: ArgumentHelp("Host name to record (default: this machine's).", valueName: "name"))
    var host: String?

    @Option(name: .customLong("checkpoint-mib"), help: ArgumentHelp(
        "Write an index checkpoint after this many MiB of new data (1-64), so an interrupted backup resumes.", valueName: "MiB"))
    var checkpointMiB: Int = 64

    @Option(name: [.customShort("e"), .long], help: ArgumentHelp(
        "Leave out files and folders matching this pattern (restic's rules; repeatable).", valueName: "pattern"))
    var exclude: [String] = []

    @Option(name: .long, help: ArgumentHelp("As --exclude, ignoring case (repeatable).", valueName: "pattern"))
    var iexclude: [String] = []

    @Option(name: .customLong("exclude-file"), help: ArgumentHelp(
        "Read --exclude patterns from a file: one per line, # comments, $VAR expanded (repeatable).", valueName: "file"))
    var excludeFile: [String] = []

    @Option(name: .customLong("files-from"), help: ArgumentHelp(
        "Read the paths to back up from a file (- for stdin): one per line, # comments, globs expanded (repeatable).", valueName: "file"))
    var filesFrom: [String] = []

    @Flag(name: .customLong("exclude-caches"), help: "Leave out the contents of folders holding a CACHEDIR.TAG with the standard signature.")
    var excludeCaches = false

    @Flag(name: [.customShort("x"), .customLong("one-file-system")], help: "Do not cross into other file systems (mount points are kept empty).")
    var oneFileSystem = false

    @Flag(name: [.customShort("n"), .customLong("dry-run")], help: "Only list what would be stored; read, write and upload nothing.")
    var dryRun = false

    @Flag(name: .customLong("erase-deleted"), help: "Capture SQLite databases with VACUUM INTO, so that rows deleted before this backup leave no trace in its snapshot (costs more bytes per run; also $COFFER_ERASE_DELETED=1).")
    var eraseDeleted = false

    func validate() throws {
        guard !paths.isEmpty || !filesFrom.isEmpty else { throw ValidationError("give at least one path to back up (or --files-from FILE)") }
        do { _ = try BackupFilter(excludes: exclude, caseInsensitiveExcludes: iexclude) } catch { throw ValidationError(error.message) }
        guard (1...64).contains(checkpointMiB) else { throw ValidationError("--checkpoint-mib must be between 1 and 64") }
    }

    func run() async throws {
        let access = RepositoryAccess(global)
        try await ErrorReport.run(logger: access.logger) {
            // Paths and patterns from files first: a bad file stops the backup before the repository is opened.
            var sources = paths
            for file in filesFrom {
                let (found, unmatched) = try BackupFilter.paths(fromFile: file)
                for u in unmatched { Terminal.err("coffer: --files-from \(file): \"\(u)\" matches no file; skipped\n") }
                sources += found
            }
            guard !sources.isEmpty else { throw CLIError(.usage, "nothing to back up: --files-from named no existing file") }
            var patterns = exclude
            for file in excludeFile { patterns += try BackupFilter.patterns(fromFile: file) }
            let filter = try BackupFilter(excludes: patterns, caseInsensitiveExcludes: iexclude, excludeCaches: excludeCaches,
                                          oneFileSystem: oneFileSystem)
            return try await access.withRepository { repo in
                var opts = BackupOptions()
                opts.filter = filter
                opts.dryRun = dryRun
                opts.parent = parent
                opts.force = force
                opts.tags = tag
                opts.hostname = host
                opts.checkpointBytes = checkpointMiB << 20
                if eraseDeleted || ProcessInfo.processInfo.environment["COFFER_ERASE_DELETED"] == "1" { opts.databaseCapture = .compacted }
                let logger = access.logger
                let options = opts
                let anchor = try await HeadAnchor.checkIfConfigured(repo, access: access, doing: "the backup", action: "back up onto this repository")
                let code = try await Interrupts.cancellingOnSignals { [self, sources] in
                    try await runBackup(repo, paths: sources, options: options, logger: logger, vaultPending: anchor?.pendingRealms)
                }
                if !dryRun { await anchor?.anchorNewest(in: repo) }
                return code
            }
        }
    }

    private func runBackup(_ repo: Repository, paths: [String], options: BackupOptions, logger: Logger, vaultPending: [String]? = nil) async throws -> CofferExitCode {
        var line = ProgressLine(enabled: !quiet && !json && !global.noProgress)
        var status = StatusEmitter(enabled: json && !quiet && !global.noProgress, action: "backup")
        var unreadable: [UnreadableFile] = []
        var summary: BackupSummary?
        do {
            for try await event in repo.backup(paths: paths, options: options) {
                switch event {
                case .scanned(let files, let bytes):
                    logger.debug("scanned \(files) files, \(bytes) bytes")
                case .progress(let p):
                    line.update(filesDone: p.filesDone, filesTotal: p.filesTotal, bytesDone: p.bytesDone,
                                bytesTotal: p.bytesTotal, elapsed: p.elapsed.seconds, current: p.currentPath)
                    status.offer(StatusJSON(action: "backup", secondsElapsed: p.elapsed.seconds,
                                            percentDone: p.bytesTotal > 0 ? Double(p.bytesDone) / Double(p.bytesTotal) : nil,
                                            filesDone: p.filesDone, filesTotal: p.filesTotal, bytesDone: p.bytesDone,
                                            bytesTotal: p.bytesTotal, currentPath: p.currentPath))
                case .unreadable(let u):
                    unreadable.append(u)
                    line.clear()
                    if !json { Terminal.err("coffer: cannot read \(u.path): \(u.reason)\n") }
                case .finished(let s):
                    summary = s
                }
            }
        } catch {
            line.clear()
            throw error
        }
        line.clear()
        guard let summary else {
            throw CLIError(.failure, "the backup ended without a snapshot")
        }
        if json {
            var out = BackupJSON(summary)
            out.vaultChangePendingAt = vaultPending
            try JSONOutput.print(out)
        } else if let entries = summary.dryRunEntries {
            printDryRun(summary, entries)
        } else if !quiet {
            printSummary(summary)
        } else if summary.isPartial {
            Terminal.err("coffer: the backup is incomplete: \(summary.unreadable.count) file\(summary.unreadable.count == 1 ? "" : "s") could not be read (exit code 3)\n")
        }
        return summary.isPartial ? .partialBackup : .ok
    }

    /// restic's dry-run listing: each entry with what would happen to it, then the totals.
    private func printDryRun(_ s: BackupSummary, _ entries: [BackupPlanEntry]) {
        var text = ""
        for e in entries {
            let what = e.kind == .file ? (e.status?.rawValue ?? "") : e.kind.rawValue
            text += pad(what, 10) + " " + e.path + (e.kind == .file ? "  (\(Units.bytes(e.size)))" : "") + "\n"
        }
        text += """
        dry run: nothing was read, stored or written. Would back up \(entries.filter { $0.kind == .file }.count) files \
        (\(Units.bytes(s.bytesTotal))), \(s.directories) folders, \(s.symlinks) symlinks; would read \(s.filesNew) new and \
        \(s.filesChanged) changed files (\(Units.bytes(s.bytesRead))), \(s.filesSkippedByMetadata) unchanged files not read again
        """
        if s.isPartial {
            text += "\n  unreadable: \(s.unreadable.count) file\(s.unreadable.count == 1 ? "" : "s") would NOT be backed up:"
            for u in s.unreadable { text += "\n    \(u.path): \(u.reason)" }
        }
        Terminal.line(text)
    }

    private func printSummary(_ s: BackupSummary) {
        let seconds = s.duration.seconds
        let rate = seconds > 0 ? Double(s.bytesRead) / seconds : 0
        var text = """
        snapshot \(String(s.snapshotID.prefix(8))) saved (\(s.snapshotID))
          files:      \(s.filesNew) new, \(s.filesChanged) changed, \(s.filesUnchanged) unchanged\
        \(s.databasesCaptured > 0 ? ", \(s.databasesCaptured) database\(s.databasesCaptured == 1 ? "" : "s") captured live" : "")
          folders:    \(s.directories), symlinks: \(s.symlinks)
          read:       \(Units.bytes(s.bytesRead)) of \(Units.bytes(s.bytesTotal)) in \(Units.seconds(seconds)) (\(Units.bytes(Int64(rate)))/s)
          stored:     \(Units.bytes(s.bytesStored + s.metadataBytesStored)) added to the repository after deduplication \
        and compression (\(Units.bytes(s.bytesNew)) of new data)
        """
        if s.isPartial {
            text += "\n  unreadable: \(s.unreadable.count) file\(s.unreadable.count == 1 ? "" : "s") NOT backed up:"
            for u in s.unreadable { text += "\n    \(u.path): \(u.reason)" }
        }
        if s.fifos > 0 { text += "\n  named pipes: \(s.fifos) (stored as entries)" }
        Terminal.line(text)
        // Warnings, not failures: sockets and devices are never stored; a file written while it was
        // read is stored as read.
        if !s.notStored.isEmpty {
            Terminal.err("coffer: warning: \(s.notStored.count) socket\(s.notStored.count == 1 ? "" : "s") or device\(s.notStored.count == 1 ? "" : "s") not backed up (they hold no data):\n")
            for u in s.notStored { Terminal.err("  \(u.path)\n") }
        }
        if !s.changedWhileRead.isEmpty {
            Terminal.err("coffer: warning: \(s.changedWhileRead.count) file\(s.changedWhileRead.count == 1 ? "" : "s") changed while being read (stored as read):\n")
            for u in s.changedWhileRead { Terminal.err("  \(u.path): \(u.reason)\n") }
        }
        if s.isPartial {
            Terminal.err("coffer: the backup is incomplete: \(s.unreadable.count) file\(s.unreadable.count == 1 ? "" : "s") could not be read (exit code 3)\n")
        }
    }
}

/// `coffer backup --json`.
struct BackupJSON: Encodable {
    var messageType = "summary"
    var snapshotID: String
    var parentID: String?
    var filesNew: Int
    var filesChanged: Int
    var filesUnchanged: Int
    var filesSkippedByMetadata: Int
    var databasesCaptured: Int
    var directories: Int
    var symlinks: Int
    var bytesTotal: Int64
    var bytesRead: Int64
    var bytesNew: Int64
    var bytesStored: Int64
    var metadataBytesStored: Int64
    var blobsNew: Int
    var packsWritten: Int
    var blobsUploadedAgain: Int
    var unreadable: [UnreadableFile]
    var fifos: Int
    var notStored: [UnreadableFile]
    var changedWhileRead: [UnreadableFile]
    var partial: Bool
    var durationSeconds: Double
    /// Only with --dry-run: true, and every entry that would be stored (`{path, kind, status, size}`).
    var dryRun: Bool?
    var entries: [BackupPlanEntry]?
    /// With a vault: the realms (hex ids) a pending vault change (password change, disable, key
    /// rotation) has still not reached; they still accept the old password. Absent when none.
    var vaultChangePendingAt: [String]? = nil

    init(_ s: BackupSummary) {
        snapshotID = s.snapshotID
        parentID = s.parentID
        filesNew = s.filesNew
        filesChanged = s.filesChanged
        filesUnchanged = s.filesUnchanged
        filesSkippedByMetadata = s.filesSkippedByMetadata
        databasesCaptured = s.databasesCaptured
        directories = s.directories
        symlinks = s.symlinks
        bytesTotal = s.bytesTotal
        bytesRead = s.bytesRead
        bytesNew = s.bytesNew
        bytesStored = s.bytesStored
        metadataBytesStored = s.metadataBytesStored
        blobsNew = s.blobsNew
        packsWritten = s.packsWritten
        blobsUploadedAgain = s.blobsUploadedAgain
        unreadable = s.unreadable
        fifos = s.fifos
        notStored = s.notStored
        changedWhileRead = s.changedWhileRead
        partial = s.isPartial
        durationSeconds = s.duration.seconds
        if let e = s.dryRunEntries {
            dryRun = true
            entries = e
        }
    }
}
