import ArgumentParser

@main
struct Coffer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coffer",
        abstract: "End-to-end encrypted, deduplicating backups with a password-protected key vault.",
        subcommands: [RealmCommand.self])
}
