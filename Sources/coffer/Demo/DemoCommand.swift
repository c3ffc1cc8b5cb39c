import ArgumentParser
import CofferBackup
import CofferCore
import CofferRealm
import CofferStorage
import CofferVault
import Foundation

/// `coffer demo`: the whole system on embedded defaults (temporary folders, local storage, SQLite
/// realms on loopback), narrated step by step. Exits 0 only when every check passed.
struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Show end-to-end encrypted backup and password recovery on this machine, in about a minute.",
        discussion: """
            Makes a sample phone (a chat database and media), starts five vault realms on loopback, \
            protects a new backup key with a password, backs up, recovers the key on a "new phone" \
            with two realms down, restores and verifies every file and message. Nothing leaves this \
            machine. Exits non-zero naming the step if any check fails.
            """)

    @Option(name: .long, help: ArgumentHelp("Keep the demo's folders in DIR for inspection (must be empty or new).", valueName: "DIR"))
    var keep: String?

    @Option(name: .long, help: "Messages in the sample chat database.")
    var messages: Int = 5000

    func validate() throws {
        guard (100...1_000_000).contains(messages) else {
            throw ValidationError("--messages must be between 100 and 1000000")
        }
    }

    func run() async throws {
        let fm = FileManager.default
        let root: URL
        if let keep {
            root = URL(fileURLWithPath: keep, isDirectory: true).standardizedFileURL
            if fm.fileExists(atPath: root.path), !((try? fm.contentsOfDirectory(atPath: root.path)) ?? []).isEmpty {
                throw ValidationError("--keep \(keep): the folder is not empty; name a new or empty folder")
            }
            try fm.createDirectory(at: root, withIntermediateDirectories: true)
        } else {
            root = fm.temporaryDirectory.appendingPathComponent("coffer-demo-\(UUID().uuidString.prefix(8))", isDirectory: true)
            try fm.createDirectory(at: root, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        }
        let demo = Demo(root: root, messages: messages)
        let passed = await demo.run()
        if keep == nil {
            try? fm.removeItem(at: root)
        } else {
            Terminal.line("\nThe demo's folders are kept in \(root.path): phone/ (the sample phone), cloud/ (what the storage "
                + "provider holds), realms/ (the five vault realms), restored*/ (the restores).")
        }
        if !passed { throw ExitCode(1) }
    }
}
