import ArgumentParser
import CofferBackup
import Foundation
import Logging

/// `coffer restore SNAPSHOT|latest --target DIR`
struct RestoreCommand: AsyncParsableCommand, Sendable {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Restore a snapshot (or part of it) into a folder.",
        discussion: """
        Every piece of data is verified before it is written; each file is written under a temporary \
        name and renamed only when all of it verified, so a damaged object never leaves a file with \
        wrong content: the files it affects are reported (naming the object) and the exit code is 13. \
        The target must be empty or missing unless --overwrite is given. Nothing outside the target is \
        ever written: symlinks below it are never followed (with --overwrite, one where the snapshot has a \
        folder is replaced by the folder). Sparse files stay sparse, hard links stay linked, named pipes \
        are recreated, and owners are restored when run as root.
        """)

    @OptionGroup var global: GlobalOptions

    @Argument(help: ArgumentHelp("The snapshot: latest, an id, or an id prefix.", valueName: "snapshot"))
    var snapshot: String

    @Option(name: [.short, .long], help: ArgumentHelp("The folder to restore into (created when missing).", valueName: "dir"))
    var target: String

    @Option(name: [.short, .long], help: ArgumentHelp("Restore only this path and what is below it (repeatable): as `ls` shows it, or absolute as it was on the machine backed up.", valueName: "path"))
    var include: [String] = []

    @Flag(name: .long, help: "Allow a non-empty target; files with the same names are replaced once their new content is verified.")
    var overwrite = false

    @Flag(name: .long, help: "Print the summary as JSON on stdout.")
    var json = false

    @Flag(name: .shortAndLong, help: "Print nothing but errors (no progress, no summary; with --json the summary line only).")
    var quiet = false

    func run() async throws {
        let access = RepositoryAccess(global)
        try await ErrorReport.run(logger: access.logger) {
            try await access.withRepository { repo in
                try await HeadAnchor.checkIfConfigured(repo, access: access, doing: "the restore", action: "restore from this repository")
                let logger = access.logger
                return try await Interrupts.cancellingOnSignals { [self] in
                    try await runRestore(repo, logger: logger)
                }
            }
        }
    }

    private func runRestore(_ repo: Repository, logger: Logger) async throws -> CofferExitCode {
        let snap = try await repo.snapshot(matching: snapshot)
        let targetURL = URL(fileURLWithPath: target, isDirectory: true)
        var line = ProgressLine(enabled: !quiet && !json && !global.noProgress)
        var status = StatusEmitter(enabled: json && !quiet && !global.noProgress, action: "restore")
        var summary: RestoreSummary?
        do {
            for try await event in repo.restore(snapshot: snap.id, target: targetURL,
                                                options: RestoreOptions(include: include, overwrite: overwrite)) {
                switch event {
                case .planned(let files, let bytes):
                    logger.debug("restoring \(files) files, \(bytes) bytes")
                case .progress(let p):
                    line.update(filesDone: p.filesDone, filesTotal: p.filesTotal, bytesDone: p.bytesDone,
                                bytesTotal: p.bytesTotal, elapsed: p.elapsed.seconds, current: p.currentPath)
                    status.offer(StatusJSON(action: "restore", secondsElapsed: p.elapsed.seconds,
                                            percentDone: p.bytesTotal > 0 ? Double(p.bytesDone) / Double(p.bytesTotal) : nil,
                                            filesDone: p.filesDone, filesTotal: p.filesTotal, bytesDone: p.bytesDone,
                                            bytesTotal: p.bytesTotal, currentPath: p.currentPath))
                case .fileFailed(let f):
                    line.clear()
                    if !json { Terminal.err("coffer: could not restore \(f.path): \(f.message)\(f.object.map { " (object \($0))" } ?? "")\n") }
                case .finished(let s):
                    summary = s
                }
            }
        } catch {
            line.clear()
            throw error
        }
        line.clear()
        guard let summary else { throw CLIError(.failure, "the restore ended early") }
        if json {
            try JSONOutput.print(RestoreJSON(summary, target: targetURL.path))
        } else if !quiet {
            Terminal.line("""
            restored snapshot \(String(summary.snapshotID.prefix(8))) into \(targetURL.path)
              \(plural(summary.filesRestored, "file")), \(plural(summary.directoriesRestored, "folder")), \(plural(summary.symlinksRestored, "symlink")), \
            \(summary.fifosRestored > 0 ? plural(summary.fifosRestored, "named pipe") + ", " : "")\
            \(Units.bytes(summary.bytesRestored)) in \(Units.seconds(summary.duration.seconds))\
            \(summary.hardLinksRestored > 0 ? " (\(plural(summary.hardLinksRestored, "file")) as hard links)" : "")
            """)
        }
        guard summary.isComplete else {
            // The worst failure decides the exit code (damage before anything else).
            let codes = summary.failures.map { ErrorReport.classify(backup: BackupError($0.code, message: $0.message)).code }
            let code = codes.contains(.damaged) ? .damaged : (codes.first ?? .failure)
            // Every file counts, those below a folder listing that cannot be read included.
            let n = summary.filesNotRestored
            Terminal.err("coffer: \(n) file\(n == 1 ? " was" : "s were") NOT restored; no file with wrong content was written\n")
            return code
        }
        return .ok
    }
}

/// `coffer restore --json`.
struct RestoreJSON: Encodable {
    struct Failure: Encodable {
        var path: String
        var object: String?
        var message: String
        /// Files this failure leaves unrestored (every file below an unreadable folder listing).
        var files: Int
    }
    var messageType = "summary"
    var snapshotID: String
    var target: String
    var filesRestored: Int
    var directoriesRestored: Int
    var symlinksRestored: Int
    var bytesRestored: Int64
    var fifosRestored: Int
    var hardLinksRestored: Int
    var filesNotRestored: Int
    var failures: [Failure]
    var durationSeconds: Double

    init(_ s: RestoreSummary, target: String) {
        snapshotID = s.snapshotID
        self.target = target
        filesRestored = s.filesRestored
        directoriesRestored = s.directoriesRestored
        symlinksRestored = s.symlinksRestored
        bytesRestored = s.bytesRestored
        fifosRestored = s.fifosRestored
        hardLinksRestored = s.hardLinksRestored
        filesNotRestored = s.filesNotRestored
        failures = s.failures.map { Failure(path: $0.path, object: $0.object, message: $0.message, files: $0.files) }
        durationSeconds = s.duration.seconds
    }
}
