// An app that embeds Coffer the way docs/LIBRARY.md says: one `Backups` object per repository,
// the device's folder in a `DeviceHome`, the key protected by a password in the Backup Key Vault.
//
//   coffer-example --vault realms/vault.json --user alice --repository /tmp/repo --work /tmp/app ~/Chats
//
// reads the password (one line) from standard input, then plays two devices:
//   1. the phone's first launch: creates the repository with a new key, protects the key with the
//      password in the vault, backs up the folder (its head anchored in the vault);
//   2. a new phone with only the password: recovers the key, checks the repository against the
//      heads anchored in the vault, restores the latest backup into WORK/restored.
// Every BackupsEvent and the backup's and restore's progress are printed.
//
// The vault here is a development vault (`coffer realm cluster`, or CofferTesting's
// `withRealmCluster`): its vault.json names the tenant's signing key, so this command mints its
// own tokens. A real app's TokenProvider asks the app's server instead (docs/VAULT.md, "Tokens").
import CofferBackup
import CofferKit
import CofferStorage
import CofferVault
import Foundation
import Synchronization

@main
struct CofferExample {
    static let usage = """
        usage: coffer-example --vault VAULT.JSON --user ACCOUNT --repository FOLDER --work FOLDER FOLDER-TO-BACK-UP
          --vault       a development vault's configuration (`coffer realm cluster` writes one)
          --user        the account in the vault
          --repository  the backup repository (a folder; created, must not exist yet)
          --work        the app's folders: the two devices' homes (phone, new-phone) and restored/
        The password is read from standard input (one line).
        """

    static func main() async {
        do {
            let arguments = try Arguments(CommandLine.arguments.dropFirst())
            try await run(arguments)
        } catch let error as UsageError {
            FileHandle.standardError.write(Data("coffer-example: \(error.message)\n\n\(usage)\n".utf8))
            exit(2)
        } catch {
            FileHandle.standardError.write(Data("coffer-example: \(error)\n".utf8))
            exit(1)
        }
    }

    static func run(_ arguments: Arguments) async throws {
        guard let password = readLine(strippingNewline: true), !password.isEmpty else {
            throw UsageError(message: "no password on standard input")
        }
        let vault = try await vaultAccess(arguments)
        let phone = arguments.work.appendingPathComponent("phone")
        let newPhone = arguments.work.appendingPathComponent("new-phone")
        let target = arguments.work.appendingPathComponent("restored")

        print("[1/2] First launch on the phone: a new repository in \(arguments.repository.path), its key protected in the vault")
        let storage = try LocalStorage(root: arguments.repository.path, create: true)
        let snapshot = try await firstBackup(home: DeviceHome(phone), folder: arguments.folder, storage: storage,
                                             vault: try vault(DeviceHome(phone)), password: password)
        print("      snapshot \(snapshot) saved")

        print("[2/2] A new phone with only the password: recover the key, check the repository, restore")
        let restored = try await restoreOnNewPhone(home: DeviceHome(newPhone), storage: try LocalStorage(root: arguments.repository.path),
                                                   vault: try vault(DeviceHome(newPhone)), password: password, into: target)
        for failure in restored.failures { print("      not restored: \(failure.path): \(failure.message)") }
        print("      restored \(restored.filesRestored) files, \(restored.bytesRestored) bytes into \(target.path)")
        guard restored.isComplete else { throw RestoreIncomplete(files: restored.filesNotRestored) }
    }

    /// First launch: create the repository with a new key, protect the key with the password in
    /// the vault, back up `folder`. Returns the snapshot id.
    static func firstBackup(home: DeviceHome, folder: URL, storage: any Storage, vault: VaultAccess,
                            password: String) async throws -> String {
        let (backups, key) = try await Backups.create(storage: storage, home: home, vault: vault, password: password,
                                                      events: show)
        print("      your 64-digit backup key (shown once; keep it offline): \(key.groupedDigits)")
        let progress = ProgressLine()
        let summary = try await backups.backup(paths: [folder.path]) { event in
            switch event {
            case .scanned(let files, let bytes):
                print("      backing up \(files) files, \(bytes) bytes")
            case .progress(let p):
                progress.show(done: p.bytesDone, total: p.bytesTotal, what: "backed up")
            case .unreadable(let file):
                print("      could not read \(file.path): \(file.reason)")
            case .finished(let s):
                print("      \(s.filesNew) new files, \(s.bytesStored) bytes stored")
            }
        }
        return summary.snapshotID
    }

    /// A new phone with only the password: recover the key (the repository is checked against the
    /// heads anchored in the vault before the key is saved), then restore the latest backup.
    static func restoreOnNewPhone(home: DeviceHome, storage: any Storage, vault: VaultAccess, password: String,
                                  into target: URL) async throws -> RestoreSummary {
        do {
            let backups = try await Backups.recover(storage: storage, home: home, vault: vault, password: password,
                                                    events: show)
            let progress = ProgressLine()
            return try await backups.restore(snapshot: "latest", target: target) { event in
                switch event {
                case .planned(let files, let bytes):
                    print("      restoring \(files) files, \(bytes) bytes")
                case .progress(let p):
                    progress.show(done: p.bytesDone, total: p.bytesTotal, what: "restored")
                case .fileFailed, .finished:
                    break  // in the summary
                }
            }
        } catch let error as VaultError {
            if error.code == .wrongPassword, let left = error.attemptsLeft { print("      wrong password: \(left) guesses left") }
            throw error
        } catch let error as BackupError where error.code == .staleRepository {
            print("      the storage serves an older copy of the backups than the vault has seen; nothing was restored")
            throw error
        }
    }

    /// What the app shows of `Backups`' events. None is an error.
    @Sendable static func show(_ event: BackupsEvent) {
        switch event {
        case .latestAnchoredBackup(let head?):
            print("      event: the vault's latest backup of this repository is from \(head.time)")
        case .latestAnchoredBackup(nil):
            print("      event: the vault knows no backup of this repository yet")
        case .headsUnreadable(let error):
            print("      event: the vault's heads could not be read (\(error)); checked against this device's only")
        case .headStored(.anchored(let snapshot, let acknowledged, let of)):
            print("      event: snapshot \(snapshot.id.prefix(8))'s head anchored at \(acknowledged) of \(of) realms")
        case .headStored(.failed(let snapshot, let error)):
            print("      event: snapshot \(snapshot.id.prefix(8)) is saved; its head could not be anchored (\(error)), retried next time")
        case .pendingVaultChangeCompleted:
            print("      event: an earlier password change reached every realm")
        case .pendingVaultChangeSuperseded:
            print("      event: an earlier password change was replaced by a later one")
        case .pendingVaultChangeStillMissing(let realms):
            print("      event: \(realms.count) realms still miss an earlier password change")
        }
    }

    /// The vault access for a device: the vault's client (the development tenant mints the tokens),
    /// the account, and the device home's store for password changes some realms missed.
    static func vaultAccess(_ arguments: Arguments) async throws -> @Sendable (DeviceHome) throws -> VaultAccess {
        let configuration = try VaultConfiguration.load(from: arguments.vault)
        let validated = try configuration.validated()
        let tokens = try await DevelopmentTenant.forConfiguration(configuration, at: arguments.vault)
        print("Vault: \(validated.n) realms, any \(validated.threshold) recover the key")
        return { home in
            VaultAccess(client: VaultClient(configuration: validated, tokens: tokens, repairStore: home.vaultRepairs),
                        user: arguments.user, configurationPath: arguments.vault.path)
        }
    }
}

/// Prints progress in steps of a quarter, whatever the number of events.
final class ProgressLine: Sendable {
    private let shown = Mutex(-1)

    func show(done: Int64, total: Int64, what: String) {
        let quarter = total > 0 ? Int(min(4, done * 4 / total)) : 4
        let isNew = shown.withLock { last in
            guard quarter > last else { return false }
            last = quarter
            return true
        }
        if isNew { print("      \(quarter * 25) % \(what) (\(done) of \(total) bytes)") }
    }
}

struct Arguments: Sendable {
    var vault: URL
    var user: String
    var repository: URL
    var work: URL
    var folder: URL

    init(_ args: ArraySlice<String>) throws {
        var options: [String: String] = [:]
        var positional: [String] = []
        var rest = args[...]
        while let arg = rest.popFirst() {
            if ["--vault", "--user", "--repository", "--work"].contains(arg) {
                guard let value = rest.popFirst() else { throw UsageError(message: "\(arg) needs a value") }
                options[arg] = value
            } else if arg.hasPrefix("-") {
                throw UsageError(message: "unknown option \(arg)")
            } else {
                positional.append(arg)
            }
        }
        func required(_ name: String) throws -> String {
            guard let v = options[name], !v.isEmpty else { throw UsageError(message: "\(name) is required") }
            return v
        }
        vault = URL(fileURLWithPath: try required("--vault"))
        user = try required("--user")
        repository = URL(fileURLWithPath: try required("--repository"))
        work = URL(fileURLWithPath: try required("--work"))
        guard positional.count == 1 else { throw UsageError(message: "name one folder to back up") }
        folder = URL(fileURLWithPath: positional[0])
    }
}

struct UsageError: Error {
    var message: String
}

struct RestoreIncomplete: Error, CustomStringConvertible {
    var files: Int
    var description: String { "\(files) files could not be restored" }
}
