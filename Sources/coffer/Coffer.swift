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
            DiffCommand.self, FindCommand.self, StatsCommand.self, DumpCommand.self, CatCommand.self,
            CheckCommand.self, ForgetCommand.self, PruneCommand.self, RepairCommand.self, KeyCommand.self,
            VaultCommand.self, RealmCommand.self, DemoCommand.self, DebugScaleCommand.self,
        ])

    static func main() async {
        MallocTuning.apply()
        TestHookEnvironment.install()
        // Global options may come before the subcommand: see GlobalOptionOrder.
        await main(GlobalOptionOrder.reorder(Array(CommandLine.arguments.dropFirst())))
    }
}
