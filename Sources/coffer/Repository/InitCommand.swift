import ArgumentParser
import CofferBackup
import CofferCore
import CofferS3
import CofferWebDAV
import Foundation

/// `coffer init`: a new repository and a new key.
struct InitCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Create a repository and a new backup key.",
        discussion: """
        Generates a random 32-byte key on this device (or uses $COFFER_KEY / --key-file), creates the \
        repository, stores the key in this device's key file (0600, under $COFFER_HOME), and prints \
        the 64-digit key once. Keep it away from this device: whoever has it can read the backups, and \
        without it nobody can.
        """)

    @OptionGroup var global: GlobalOptions

    @Flag(name: .long, help: "Also protect the new key with a password in the Backup Key Vault (needs --vault and --user; the password comes from a prompt or $COFFER_PASSWORD).")
    var password = false

    @OptionGroup(title: "Vault (with --password)") var vault: VaultOptions

    @Option(name: .customLong("pack-size"), help: ArgumentHelp("Target pack size in MiB (1-128; default \(RepositoryOptions.defaultTargetPackSize >> 20) for a folder, \(RepositoryOptions.defaultRemotePackSize >> 20) for S3).", valueName: "MiB"))
    var packSizeMiB: Int?

    @Option(name: .customLong("padding"), help: ArgumentHelp("Size padding of stored objects: padme (Padme sizes, 1 MiB floor; hides blob and object lengths from the storage provider) or none (only for comparison).", valueName: "padme|none"))
    var padding: String = "padme"

    @Flag(name: .long, help: "Print the result as JSON on stdout (the new key included).")
    var json = false

    func validate() throws {
        guard ["padme", "none"].contains(padding) else { throw ValidationError("--padding must be padme or none") }
        if let packSizeMiB, !(1...128).contains(packSizeMiB) { throw ValidationError("--pack-size must be between 1 and 128 MiB") }
    }

    func run() async throws {
        let access = RepositoryAccess(global)
        try await ErrorReport.run(logger: access.logger) {
            let prepared = password ? try await PreparedVault.prepare(vault) : nil
            let given = try access.explicitKey()
            let key = given ?? BackupKey()
            var options = RepositoryOptions()
            if padding == "none" {
                options.padding = .none
                options.paddingFloor = 0
            }
            let repo = try await access.withStorage(create: true) { storage in
                // The default follows the storage that was opened: S3 and WebDAV get bigger packs (fewer requests).
                options.targetPackSize = packSizeMiB.map { $0 << 20 }
                    ?? (storage is S3Storage || storage is WebDAVStorage ? RepositoryOptions.defaultRemotePackSize : RepositoryOptions.defaultTargetPackSize)
                return try await Repository.initialize(storage: storage, key: key, options: options, deviceStore: access.deviceStore)
            }
            let keyFile = access.deviceStore.keyFileURL(repositoryID: repo.repositoryID).path
            try await NewKeyHook.keyCreated(key, repositoryID: repo.repositoryID, location: repo.storage.location,
                                            vault: prepared, logger: access.logger)
            if json {
                try JSONOutput.print(InitJSON(repositoryId: repo.repositoryID, location: repo.storage.location, keyFile: keyFile,
                                              keyGiven: given != nil, key: given == nil ? key.digits : nil,
                                              vaultUser: prepared?.user))
                return .ok
            }
            Terminal.line("Created repository \(repo.repositoryID) at \(repo.storage.location)")
            if given != nil {
                Terminal.line("It uses the key you gave; a copy is in this device's key file \(keyFile) (readable only by you).")
                return .ok
            }
            Terminal.line("""

            Your backup key (shown once; `coffer key show` prints it again on this device):

                \(key.groupedDigits)

            Keep it somewhere safe that is not this device: a password manager, or written down and
            stored offline. Anyone with this key and access to the storage can read your backups;
            without it, nobody can restore them, not even you.
            This device keeps a copy in \(keyFile) (readable only by you).
            """)
            return .ok
        }
    }
}

/// `coffer key ...`
struct KeyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "key",
        abstract: "Show or rotate the repository's backup key.",
        subcommands: [KeyShowCommand.self, KeyRotateCommand.self])
}

/// `coffer key show`: the 64 digits, for writing down or moving to another device.
struct KeyShowCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show",
        abstract: "Print the repository's 64-digit key (from this device's key file).",
        discussion: "The key is checked against the repository before it is printed.")

    @OptionGroup var global: GlobalOptions

    @Flag(name: .long, help: "Print the 64 digits without spaces.")
    var plain = false

    @Flag(name: .long, help: "Print the key as JSON on stdout.")
    var json = false

    func run() async throws {
        let access = RepositoryAccess(global)
        try await ErrorReport.run(logger: access.logger) {
            try await access.withStorage { storage in
                let key = try await access.key(for: storage)
                // Only print a key that opens this repository (a stale key file would mislead).
                let repo = try await Repository.open(storage: storage, key: key, deviceStore: nil)
                if json {
                    try JSONOutput.print(KeyShowJSON(repositoryId: repo.repositoryID, location: storage.location, key: key.digits))
                } else {
                    Terminal.line(plain ? key.digits : key.groupedDigits)
                }
            }
            return .ok
        }
    }
}

/// `coffer init --json` (docs/schemas/init.json).
struct InitJSON: Encodable {
    var repositoryId: String
    var location: String
    /// This device's copy of the key.
    var keyFile: String
    /// True when the key came from --key-file, $COFFER_KEY_FILE or $COFFER_KEY.
    var keyGiven: Bool
    /// The new key's 64 hex digits; absent when the key was given.
    var key: String?
    /// With --password: the vault account now protecting the key.
    var vaultUser: String?
}

/// `coffer key show --json` (docs/schemas/key-show.json).
struct KeyShowJSON: Encodable {
    var repositoryId: String
    var location: String
    var key: String
}
