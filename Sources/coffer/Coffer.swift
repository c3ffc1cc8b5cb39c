import ArgumentParser
import CofferCore

@main
struct Coffer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coffer",
        abstract: "End-to-end encrypted, deduplicating backups with a password-protected key vault.",
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
