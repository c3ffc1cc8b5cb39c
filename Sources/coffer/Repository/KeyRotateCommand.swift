import ArgumentParser
import CofferBackup
import CofferCore
import CofferVault
import Foundation

/// `coffer key rotate`: a new backup key; every snapshot re-encrypted; the vault re-registered.
struct KeyRotateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rotate",
        abstract: "Replace the backup key: re-encrypt every snapshot under a new key and retire the old one.",
        discussion: """
        Makes a new random key and repository id, re-encrypts every snapshot into a new generation of the \
        repository, commits it by replacing the repository's config, then deletes the old generation and \
        this device's old key file. Copies of the old data that the storage provider may keep become \
        unreadable once the old key is gone from this device and the vault. With --vault/--user (or \
        COFFER_VAULT/COFFER_USER) the new key replaces the old one in the vault behind the same password, \
        which is checked first. Safe to interrupt: run it again to finish (docs/KEY-ROTATION.md). No other \
        device should back up to the repository until it has finished.
        """)

    @OptionGroup var global: GlobalOptions
    @OptionGroup(title: "Vault") var vault: VaultOptions

    @Flag(name: .customLong("no-vault"), help: "Do not touch the vault even if COFFER_VAULT is set.")
    var noVault = false

    @Flag(name: .long, help: "Print the new 64 digits without spaces.")
    var plain = false

    @Flag(name: .shortAndLong, help: "No progress lines.")
    var quiet = false

    @Flag(name: .long, help: "Print JSON Lines on stdout: a status line per step, then the summary (the new key included).")
    var json = false

    var vaultConfigured: Bool {
        if noVault { return false }
        let v = vault.vault ?? ProcessInfo.processInfo.environment["COFFER_VAULT"]
        return !(v ?? "").isEmpty
    }

    func run() async throws {
        let access = RepositoryAccess(global)
        try await ErrorReport.run(logger: access.logger) {
            try await access.withStorage { storage in
                let key = try await access.key(for: storage)
                let rootID = try await Repository.readRepositoryID(storage: storage)
                let prepared = try await prepareVault(currentKey: key, repositoryID: rootID, deviceStore: access.deviceStore)
                if prepared == nil && !noVault {
                    Terminal.err("note: no vault configured (--vault or COFFER_VAULT): if this key is in the vault, stop now and run again with --vault and --user, or the vault keeps the old key, which stops opening the repository\n")
                }
                let quiet = self.quiet || global.noProgress, json = self.json
                let started = ContinuousClock.now
                let reporter = ProgressReporter(action: "key_rotate", text: !quiet && !json, json: json && !quiet)
                defer { reporter.clear() }
                let report = try await KeyRotation.rotate(
                    storage: storage, key: key, deviceStore: access.deviceStore,
                    beforeCommit: { newKey, _ in
                        // The new generation is complete: the vault gets K' before the commit, so a crash in
                        // between leaves the vault with a key that opens the staged generation (rolled forward).
                        guard let prepared else { return }
                        // Replaces the registration the recovery (and its rotation) proved the password for.
                        let r = try await prepared.client.register(key: newKey, password: prepared.password, user: prepared.user,
                                                                   replace: prepared.replaceCredential.map { VaultReplaceMode.proof($0) } ?? .refuse)
                        printRegistration(r, client: prepared.client, what: "The vault now holds the new key for \(prepared.user) (same password).")
                    },
                    progress: { line in
                        guard !quiet else { return }
                        reporter.clear()
                        if json {
                            try? JSONOutput.print(StatusJSON(action: "key_rotate", secondsElapsed: (ContinuousClock.now - started).seconds, message: line))
                        } else {
                            Terminal.err("  \(line)\n")
                        }
                    },
                    work: reporter.workProgress)
                reporter.clear()
                if let prepared {
                    // The rotated repository has a new id: remember its vault, and anchor every writer's
                    // newest (re-encrypted, so renamed) snapshot so a new device checks it at once.
                    if let path = prepared.configPath {
                        VaultLinks.save(access.deviceStore, repositoryID: report.newRepositoryID, vault: path, user: prepared.user)
                    }
                    if let repo = try? await Repository.open(storage: storage, key: report.newKey, deviceStore: access.deviceStore) {
                        await HeadAnchor(client: prepared.client, user: prepared.user, key: report.newKey).anchorEveryWriter(in: repo)
                    }
                }
                let keyFile = access.deviceStore.keyFileURL(repositoryID: report.newRepositoryID).path
                let vaultIncomplete = prepared.map { $0.client.pendingChange(user: $0.user) != nil } ?? false
                if json {
                    try JSONOutput.print(KeyRotateJSON(
                        oldRepositoryId: report.oldRepositoryID, newRepositoryId: report.newRepositoryID, location: storage.location,
                        snapshots: report.snapshots, blobsWritten: report.blobsWritten, bytesWritten: Int64(report.bytesWritten),
                        oldObjectsDeleted: report.oldObjectsDeleted, key: report.newKey.digits, keyFile: keyFile,
                        vaultUser: prepared?.user, vaultComplete: prepared.map { _ in !vaultIncomplete }))
                    return vaultIncomplete ? .vaultIncomplete : .ok
                }
                Terminal.line("Rotated the key of repository \(report.oldRepositoryID): it is now repository \(report.newRepositoryID) at \(storage.location).")
                Terminal.line("\(report.snapshots) snapshots re-encrypted (\(report.blobsWritten) blobs, \(report.bytesWritten) bytes written); \(report.oldObjectsDeleted) objects of the old generation deleted.")
                Terminal.line("""

                Your new backup key (shown once; `coffer key show` prints it again on this device):

                    \(plain ? report.newKey.digits : report.newKey.groupedDigits)

                Keep it somewhere safe that is not this device: a password manager, or written down and
                stored offline. Anyone with this key and access to the storage can read your backups;
                without it, nobody can restore them, not even you.
                The old key no longer opens this repository: destroy every copy of it you kept.
                This device keeps a copy of the new key in \(keyFile) (readable only by you).
                """)
                // The vault part is complete only when every realm holds the new key (else it is
                // pending on this device, and the realms that still hold the old key were named).
                if let prepared, prepared.client.pendingChange(user: prepared.user) != nil { return .vaultIncomplete }
                return .ok
            }
        }
    }

    /// With a vault configured: the password, checked by recovering the key it protects, which must
    /// be this repository's key (or the new key of this device's unfinished rotation). A wrong
    /// password stops here, before anything is written.
    private func prepareVault(currentKey: BackupKey, repositoryID: String, deviceStore: DeviceKeyStore) async throws -> PreparedVault? {
        guard vaultConfigured else { return nil }
        let user = try vault.account()
        let client = try await vault.client()
        await finishPendingChange(client, user: user)
        let password = try readPassword(prompt: "Vault password for \(user) (the new key goes behind it): ", confirm: false, options: vault)
        let recovered = try await client.recover(password: password, user: user)
        let accepted = [currentKey.digits, KeyRotation.pendingNewKey(repositoryID: repositoryID, deviceStore: deviceStore)?.digits]
        guard accepted.contains(recovered.key.digits) else {
            throw CLIError(.failure, "the vault holds another key for \(user), not the key of this repository; nothing was changed",
                           hint: "Check --user, or rotate with --no-vault and protect the new key with `coffer vault enable` afterwards.")
        }
        return PreparedVault(client: client, user: user, password: password, configPath: vault.configPath,
                             replaceCredential: recovered.replaceCredential)
    }
}

/// `coffer key rotate --json`: the summary line (docs/schemas/key-rotate.json).
struct KeyRotateJSON: Encodable {
    var messageType = "summary"
    var oldRepositoryId: String
    var newRepositoryId: String
    var location: String
    var snapshots: Int
    var blobsWritten: Int
    var bytesWritten: Int64
    var oldObjectsDeleted: Int
    /// The new key's 64 hex digits.
    var key: String
    var keyFile: String
    /// With a vault: the account, and whether every realm holds the new key.
    var vaultUser: String?
    var vaultComplete: Bool?
}
