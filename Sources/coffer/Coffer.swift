import ArgumentParser
import CofferCore

@main
struct Coffer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coffer",
        abstract: "End-to-end encrypted, deduplicating backups with a password-protected key vault.",
        discussion: Coffer.overview,
        version: CofferVersion.description,
        subcommands: [
            InitCommand.self, BackupCommand.self, SnapshotsCommand.self, LsCommand.self, RestoreCommand.self,
            DiffCommand.self, FindCommand.self, StatsCommand.self, DumpCommand.self, CopyCommand.self, CatCommand.self,
            CheckCommand.self, ForgetCommand.self, PruneCommand.self, RepairCommand.self, KeyCommand.self,
            VaultCommand.self, RealmCommand.self, DemoCommand.self, DebugScaleCommand.self,
        ])

    static func main() async {
        MallocTuning.apply()
        TestHookEnvironment.install()
        // Global options may come before the subcommand: see GlobalOptionOrder.
        let arguments = GlobalOptionOrder.reorder(Array(CommandLine.arguments.dropFirst()))
        var command: any ParsableCommand
        do {
            command = try parseAsRoot(arguments)
        } catch {
            // Help, --version and completion scripts end here as ArgumentParser prints them; a usage
            // error gets the prefix and the exit code of every other error (docs/CLI.md, "Exit codes").
            guard exitCode(for: error) == .validationFailure else { exit(withError: error) }
            reportUsage(error)
            exit(withError: ExitCode(CofferExitCode.usage.rawValue))
        }
        do {
            if var async = command as? AsyncParsableCommand {
                try await async.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }

    /// `coffer: MESSAGE` and ArgumentParser's usage lines on stderr, or with `--json` the error line.
    static func reportUsage(_ error: any Error) {
        if JSONOutput.requested {
            JSONOutput.printError(code: .usage, message: message(for: error), hint: "See `coffer help` or `coffer COMMAND --help`.")
            return
        }
        var text = fullMessage(for: error)
        if text.hasPrefix("Error: ") { text = "coffer: " + text.dropFirst("Error: ".count) }
        Terminal.err(text + (text.hasSuffix("\n") ? "" : "\n"))
    }
}

extension Coffer {
    /// `coffer --help`'s text under the command list, and the DESCRIPTION of coffer(1): where the
    /// repository and its key come from, the environment, and the exit codes (from the one table
    /// the CLI exits by, so the page cannot disagree with the binary).
    static var overview: String {
        let codes = CofferExitCode.allCases.sorted { $0.rawValue < $1.rawValue }
            .map { "  \($0.rawValue)\(String(repeating: " ", count: max(1, 5 - String($0.rawValue).count)))\($0.summary)" }
            .joined(separator: "\n")
        return """
            Every command that works on a repository takes -r/--repo (or $COFFER_REPO) and finds its key \
            in this device's key file, --key-file, $COFFER_KEY_FILE or $COFFER_KEY (the 64-digit key), \
            or recovers it from the vault with a password. `coffer COMMAND --help` lists a command's \
            options; docs/CLI.md is the full guide.

            Environment: COFFER_REPO, COFFER_KEY, COFFER_KEY_FILE, COFFER_PASSWORD, \
            COFFER_PASSWORD_FILE, COFFER_PASSWORD_COMMAND, COFFER_CURRENT_PASSWORD, COFFER_VAULT, \
            COFFER_USER, COFFER_HOME (this device's keys and state, default ~/.config/coffer), \
            COFFER_PROGRESS_FPS, COFFER_NETWORK_BUDGET, COFFER_LOG_LEVEL, COFFER_FROM_REPO, \
            COFFER_FROM_KEY_FILE, COFFER_FROM_KEY; for S3 the AWS_* variables (AWS_ACCESS_KEY_ID, \
            AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL, AWS_PROFILE); for WebDAV \
            COFFER_WEBDAV_USER, COFFER_WEBDAV_PASSWORD, COFFER_WEBDAV_PASSWORD_COMMAND, \
            COFFER_WEBDAV_NETRC.

            Exit codes:
            \(codes)
            """
    }
}
