import ArgumentParser
import CofferBackup
import CofferCore
import CofferVault
import Foundation

/// `coffer vault ...`: protect the backup key with a password in the Backup Key Vault.
struct VaultCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vault",
        abstract: "Protect a backup key with a password in the Backup Key Vault, or recover it on a new device.",
        discussion: """
        The vault configuration comes from --vault or COFFER_VAULT, the account from --user or COFFER_USER, \
        the password from a prompt (no echo) or COFFER_PASSWORD. Realm tokens come from the development \
        tenant key named in vault.json, or from --token-command / COFFER_VAULT_TOKEN_COMMAND \
        (run as `CMD USER REALM_ID SCOPE`, prints a token).
        """,
        subcommands: [VaultEnable.self, VaultRecover.self, VaultChangePassword.self, VaultDisable.self, VaultStatusCommand.self])
}

/// Options every vault command shares.
struct VaultOptions: ParsableArguments {
    @Option(help: "Vault configuration file (vault.json). Default: $COFFER_VAULT.") var vault: String?
    @Option(help: "The account (token subject). Default: $COFFER_USER.") var user: String?
    @Option(help: "Command that prints a realm token: CMD USER REALM_ID SCOPE. Default: $COFFER_VAULT_TOKEN_COMMAND, else the development tenant.")
    var tokenCommand: String?
    @Option(help: "Seconds to wait for each realm.") var timeout: Int = 10

    var environment: [String: String] { ProcessInfo.processInfo.environment }

    /// `--vault`, else `$COFFER_VAULT`.
    var configPath: String? { (vault ?? environment["COFFER_VAULT"]).flatMap { $0.isEmpty ? nil : $0 } }

    func account() throws -> String {
        guard let u = user ?? environment["COFFER_USER"], !u.isEmpty else {
            throw VaultCLIError("no account: pass --user ID or set COFFER_USER", code: 2)
        }
        return u
    }

    func client() async throws -> VaultClient {
        guard let path = vault ?? environment["COFFER_VAULT"], !path.isEmpty else {
            throw VaultCLIError("no vault configuration: pass --vault FILE or set COFFER_VAULT (`coffer realm cluster` writes one)", code: 2)
        }
        let url = URL(fileURLWithPath: path)
        let raw = try VaultConfiguration.load(from: url)
        let config = try raw.validated()
        let tokens: any TokenProvider
        if let cmd = tokenCommand ?? environment["COFFER_VAULT_TOKEN_COMMAND"], !cmd.isEmpty {
            tokens = CommandTokenProvider(commandLine: cmd)
        } else {
            tokens = try await DevelopmentTenant.forConfiguration(raw, at: url)
        }
        return VaultClient(configuration: config, tokens: tokens, transport: HTTPRealmTransport(timeout: .seconds(Int64(max(1, timeout)))),
                           repairStore: VaultRepairStore())
    }
}

/// Where the backup key comes from (enable, change password).
struct KeySourceOptions: ParsableArguments {
    @Option(help: "File holding the 64-digit key. Default: $COFFER_KEY (the digits), or this device's key for --repo.")
    var keyFile: String?
    @Option(help: "The repository whose key this device holds (a folder, file:///path or s3://BUCKET/PREFIX). Default: $COFFER_REPO.")
    var repo: String?
    @Option(help: "Repository id whose key this device holds (in $COFFER_HOME/keys), instead of --repo.") var repositoryID: String?

    func key() async throws -> BackupKey { try await keyAndRepository().key }

    /// The key, and the repository id when the source names one (for the vault link).
    func keyAndRepository() async throws -> (key: BackupKey, repositoryID: String?) {
        let env = ProcessInfo.processInfo.environment
        if let keyFile { return (try DeviceKeyStore.readKeyFile(at: URL(fileURLWithPath: keyFile)), repositoryID) }
        if let digits = env["COFFER_KEY"], !digits.isEmpty {
            do { return (try BackupKey(digits: digits), repositoryID) } catch { throw VaultCLIError("COFFER_KEY: \(error)", code: 2) }
        }
        if let repositoryID {
            guard let key = try DeviceKeyStore().loadKey(repositoryID: repositoryID) else {
                throw VaultCLIError("this device holds no key for repository \(repositoryID)", code: 2)
            }
            return (key, repositoryID)
        }
        if let location = repo ?? env["COFFER_REPO"], !location.isEmpty {
            // The device key of that repository, checked against the repository before it is protected.
            let access = RepositoryAccess(try GlobalOptions.parse(["--repo", location]))
            return try await access.withRepository { repository in
                guard let key = try access.deviceStore.loadKey(repositoryID: repository.repositoryID) else {
                    throw VaultCLIError("this device holds no key for repository \(repository.repositoryID)", code: 2)
                }
                return (key, repository.repositoryID)
            }
        }
        throw VaultCLIError("no key: pass --repo LOCATION (or set COFFER_REPO), --key-file FILE, set COFFER_KEY, or pass --repository-id ID", code: 2)
    }
}

struct VaultEnable: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "enable",
        abstract: "Protect an existing backup key with a password in the vault.",
        discussion: """
        An account that already has an active registration is refused (exit 26, nothing replaced): \
        `coffer vault change-password` replaces it with the current password. With --reset (a forgotten \
        password) it is replaced without the current password on reset-scoped tokens; every realm counts \
        each reset (coffer_realm_resets_total).
        """)
    @OptionGroup var options: VaultOptions
    @OptionGroup var keySource: KeySourceOptions
    @Flag(help: "Replace an existing registration without the current password (reset-scoped tokens; counted by every realm).")
    var reset = false

    func run() async throws {
        try await runMapped {
            let (key, repositoryID) = try await keySource.keyAndRepository()
            let user = try options.account()
            let client = try await options.client()
            await finishPendingChange(client, user: user)
            let password = try readPassword(prompt: "New vault password: ", confirm: true)
            try client.checkPasswordPolicy(password)
            let report = try await client.register(key: key, password: password, user: user, replace: reset ? .reset : .refuse)
            let what = reset ? "The vault registration of \(user) was reset: it now protects this key under the new password."
                : "The vault now protects this key for \(user)."
            let complete = printRegistration(report, client: client, what: what)
            if let repositoryID, let path = options.configPath { VaultLink.save(DeviceKeyStore(), repositoryID: repositoryID, vault: path, user: user) }
            if !complete { throw ExitCode(CofferExitCode.vaultIncomplete.rawValue) }
        }
    }
}

struct VaultChangePassword: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "change-password",
        abstract: "Replace the vault password (needs the current one; the old password stops working once every realm has the change).",
        discussion: """
        The current password comes from COFFER_CURRENT_PASSWORD or a prompt: it is checked by recovering \
        the key (one guess, as any recovery; a wrong one changes nothing), and proves the change to every \
        realm. The new password comes from COFFER_PASSWORD or a prompt (asked twice).
        """)
    @OptionGroup var options: VaultOptions

    func run() async throws {
        try await runMapped {
            let user = try options.account()
            let client = try await options.client()
            await finishPendingChange(client, user: user)
            let current = try readPassword(prompt: "Current vault password for \(user): ", confirm: false, environment: "COFFER_CURRENT_PASSWORD")
            let password = try readPassword(prompt: "New vault password: ", confirm: true)
            try client.checkPasswordPolicy(password)
            let report = try await client.changePassword(currentPassword: current, newPassword: password, user: user)
            let complete = printRegistration(report, client: client, what: "The new password is active for \(user).")
            if !complete { throw ExitCode(CofferExitCode.vaultIncomplete.rawValue) }
        }
    }
}

struct VaultRecover: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "recover",
        abstract: "Recover the backup key on a new device with the password; writes the device key file.",
        discussion: "Each attempt costs one guess. After a successful recovery the vault registration is renewed.")
    @OptionGroup var options: VaultOptions
    @Option(help: "The repository to recover the key for (a folder, file:///path or s3://BUCKET/PREFIX): the key is checked against it and saved in this device's key store. Default: $COFFER_REPO.")
    var repo: String?
    @Option(help: "Store the key in this device's key store ($COFFER_HOME/keys) for this repository id.") var repositoryID: String?
    @Option(help: "Write the key (64 digits, mode 0600) to this file.") var keyOut: String?

    var repositoryLocation: String? {
        if let repo, !repo.isEmpty { return repo }
        if repositoryID == nil, keyOut == nil, let env = ProcessInfo.processInfo.environment["COFFER_REPO"], !env.isEmpty { return env }
        return nil
    }

    func validate() throws {
        guard repositoryLocation != nil || repositoryID != nil || keyOut != nil else {
            throw ValidationError("say where the recovered key goes: --repo LOCATION (or COFFER_REPO), --repository-id ID (device key store) or --key-out FILE")
        }
    }

    func run() async throws {
        try await runMapped {
            let user = try options.account()
            let client = try await options.client()
            await finishPendingChange(client, user: user)
            let password = try readPassword(prompt: "Vault password for \(user): ", confirm: false)
            let result = try await client.recover(password: password, user: user)
            if let location = repositoryLocation {
                // Check the recovered key against the repository before the device keeps it.
                let access = RepositoryAccess(try GlobalOptions.parse(["--repo", location]))
                let id = try await access.withStorage { storage in
                    let repository = try await Repository.open(storage: storage, key: result.key, deviceStore: nil)
                    return repository.repositoryID
                }
                try access.deviceStore.saveKey(result.key, repositoryID: id)
                print("Recovered the key of repository \(id); saved to \(access.deviceStore.keyFileURL(repositoryID: id).path) (mode 0600).")
                if let path = options.configPath { VaultLink.save(access.deviceStore, repositoryID: id, vault: path, user: user) }
                // Before anything is restored: the anchored heads against what the storage shows.
                do {
                    try await access.withStorage { storage in
                        let repository = try await Repository.open(storage: storage, key: result.key, deviceStore: access.deviceStore)
                        try await HeadAnchor(client: client, user: user, key: result.key)
                            .check(repository, doing: "the recovery check", action: "restore from this repository", latest: { print($0) })
                    }
                } catch let e as BackupError where e.code == .staleRepository {
                    printErr("note: the key is recovered and saved, but do not restore from this copy of the repository:")
                    throw e
                }
            }
            if let repositoryID {
                let store = DeviceKeyStore()
                try store.saveKey(result.key, repositoryID: repositoryID)
                print("Recovered the key; saved to \(store.keyFileURL(repositoryID: repositoryID).path) (mode 0600).")
                if let path = options.configPath { VaultLink.save(store, repositoryID: repositoryID, vault: path, user: user) }
            }
            if let keyOut {
                try DeviceKeyStore.writeKeyFile(result.key, to: URL(fileURLWithPath: keyOut))
                print("Recovered the key; written to \(keyOut) (mode 0600).")
            }
            if repositoryLocation == nil {
                // No storage to check against: show what the vault anchors, and keep it on this device.
                await HeadAnchor(client: client, user: user, key: result.key).report(repositoryID: repositoryID, store: DeviceKeyStore())
            }
            for p in result.faulty { printErr("warning: \(p) — report this to the vault operators") }
            for p in result.down { printErr("note: \(p)") }
            if let rotation = result.rotation {
                print("Vault registration renewed (\(rotation.acknowledged.count) of \(client.configuration.n) realms).")
                for line in incompleteLines(rotation.pending, pendingNotSaved: rotation.pendingNotSaved, registration: true) { printErr(line) }
            } else if let e = result.rotationError {
                printErr("warning: the registration could not be renewed (\(e)); the password still works, run `coffer vault recover` again later")
            }
        }
    }
}

struct VaultDisable: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "disable",
        abstract: "Delete the key from every vault realm. The 64-digit key keeps working.")
    @OptionGroup var options: VaultOptions

    func run() async throws {
        try await runMapped {
            let user = try options.account()
            let client = try await options.client()
            await finishPendingChange(client, user: user)
            let report = try await client.disable(user: user)
            let n = client.configuration.n
            if report.complete {
                print("The vault no longer holds a key for \(user): all \(n) realms confirmed.")
            } else {
                print("The vault key for \(user) is disabled at \(report.cleared.count) of \(n) realms (enough to take effect), but not yet everywhere.")
                for line in incompleteLines(report.remaining, pendingNotSaved: report.pendingNotSaved, registration: false) { printErr(line) }
                throw ExitCode(CofferExitCode.vaultIncomplete.rawValue)
            }
        }
    }
}

struct VaultStatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show which realms hold which registration, guesses left, and which are down. Costs no guess.")
    @OptionGroup var options: VaultOptions

    func run() async throws {
        try await runMapped {
            let user = try options.account()
            let client = try await options.client()
            // Finish a change that some realms missed, while it is still the newest one.
            let stillPending = await finishPendingChange(client, user: user)
            let status = await client.status(user: user)
            let t = client.configuration.threshold, n = client.configuration.n
            if let v = status.activeVersion {
                print("\(user): protected (version \(v.hex)), \(status.attemptsLeft ?? 0) guesses left; \(status.converged.count) of \(n) realms agree (\(t) needed).")
            } else if status.realms.contains(where: { if case .locked = $0.state { return true } else { return false } }) {
                print("\(user): locked or inconsistent: no \(t) realms hold a usable registration.")
            } else if n - status.down.count < t {
                print("\(user): unknown: only \(n - status.down.count) of \(n) realms answered (\(t) needed).")
            } else {
                print("\(user): not protected by the vault.")
            }
            for r in status.realms {
                let s: String
                switch r.state {
                case .active(let v, let left): s = "version \(v.hex), \(left) guesses left" + (status.stale.contains(r.realmID) ? " (stale: repaired by the next recovery or enable)" : "")
                case .locked(let v): s = "locked (destroyed version \(v.hex))"
                case .notRegistered: s = "no registration"
                case .down(let why): s = "DOWN: \(why)"
                }
                print("  realm \(r.realmID.hex)  \(r.url)  \(s)")
            }
            if status.activeVersion == nil && n - status.down.count < t { throw ExitCode(CofferExitCode.vaultUnavailable.rawValue) }
            if stillPending != nil { throw ExitCode(CofferExitCode.vaultIncomplete.rawValue) }
        }
    }
}

// MARK: - Support

/// Prints what a registration did; returns true when it is complete (every realm has it). A
/// partial one names each realm that still accepts the old password and holds the old key.
@discardableResult
func printRegistration(_ report: RegistrationReport, client: VaultClient, what: String) -> Bool {
    let n = client.configuration.n
    print(what)
    if report.complete {
        print("Version \(report.version.hex), stored at \(n) of \(n) realms: every realm confirmed, none accepts an older password or holds an older key.")
        return true
    }
    print("Version \(report.version.hex), stored at \(report.acknowledged.count) of \(n) realms (enough to take effect), but not yet everywhere.")
    for line in incompleteLines(report.pending, pendingNotSaved: report.pendingNotSaved, registration: true) { printErr(line) }
    return false
}

/// What an incomplete change means, realm by realm, and what this device does about it.
func incompleteLines(_ realms: [RealmProblem], pendingNotSaved: String?, registration: Bool) -> [String] {
    guard !realms.isEmpty else { return [] }
    let still = registration ? "still accepts the old password and holds the old key (if it held a registration)"
                             : "still holds the key and accepts the password"
    var lines = ["warning: the change is not complete; until it reaches them:"]
    for p in realms { lines.append("  realm \(p.realmID.hex) (\(p.url)) \(still) (\(p.reason))") }
    if let why = pendingNotSaved {
        lines.append("warning: this device could not keep the change pending (\(why)); run the command again when the realms are back")
    } else {
        lines.append("This device keeps the change pending and retries it before every vault command and every backup; `coffer vault status` retries it now.")
    }
    return lines
}

/// Retries this device's pending vault change, if any, and says what happened. Returns the change
/// that is still pending afterwards (its realms are named on stderr), or nil.
@discardableResult
func finishPendingChange(_ client: VaultClient, user: String) async -> VaultPendingChange? {
    guard let change = client.pendingChange(user: user) else { return nil }
    let registration: Bool
    if case .registration = change { registration = true } else { registration = false }
    let n = client.configuration.n
    do {
        switch try await client.repair(user: user) {
        case .completed, .nothingPending:
            printErr(registration ? "note: the pending vault change is now complete: all \(n) realms have it; the old password no longer works at any realm."
                                  : "note: the pending vault disable is now complete: no realm holds the key any more.")
            return nil
        case .superseded:
            printErr("note: a later change (another device, a disable or a lockout) replaced this device's pending vault \(change.kind); it was dropped.")
            return nil
        case .stillPending:
            break
        }
    } catch {
        printErr("coffer: warning: the pending vault \(change.kind) could not be retried now: \(error)")
    }
    guard let left = client.pendingChange(user: user) else { return nil }
    let ids = left.realmsNotUpdated(in: client.configuration)
    let realms = ids.map { id in RealmProblem(realmID: id, url: client.configuration.realms.first { $0.id == id }?.baseURL ?? "?", reason: "not reached yet") }
    for line in incompleteLines(realms, pendingNotSaved: nil, registration: registration) { printErr(line) }
    return left
}

func printErr(_ s: String) {
    FileHandle.standardError.write(Data((s + "\n").utf8))
}

/// A vault command failed: a message and an exit code.
struct VaultCLIError: Error, CustomStringConvertible {
    var description: String
    var code: Int32
    init(_ description: String, code: Int32 = 1) {
        self.description = description
        self.code = code
    }
}

/// Runs a vault command body; errors become a message and an exit code through the CLI's one
/// mapping (`ErrorReport`, docs/CLI.md): 20 wrong password, 21 locked, 22 not registered, 23 realms
/// unavailable, 24 realm fault, 64 usage.
func runMapped(_ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch let e as ExitCode {
        throw e
    } catch let e as ValidationError {
        throw e
    } catch {
        // One prefix and layout for every command (as ErrorReport.run): `coffer: message`, hint indented.
        let (code, message, hint) = ErrorReport.classify(error)
        printErr("coffer: \(message)")
        if let hint { printErr("  \(hint)") }
        throw ExitCode(code.rawValue)
    }
}

/// The password: `$environment` (`COFFER_PASSWORD` unless named) if set (not trimmed), else a prompt
/// on the terminal with echo off.
func readPassword(prompt: String, confirm: Bool, environment: String = "COFFER_PASSWORD") throws -> String {
    if let p = ProcessInfo.processInfo.environment[environment] {
        guard !p.isEmpty else { throw VaultCLIError("\(environment) is empty", code: 2) }
        return p
    }
    let first = try promptNoEcho(prompt)
    guard !first.isEmpty else { throw VaultCLIError("the password must not be empty", code: 2) }
    if confirm {
        let second = try promptNoEcho("Repeat: ")
        guard second == first else { throw VaultCLIError("the passwords do not match", code: 2) }
    }
    return first
}

func promptNoEcho(_ prompt: String) throws -> String {
    FileHandle.standardError.write(Data(prompt.utf8))
    var saved = termios()
    let isTTY = isatty(STDIN_FILENO) == 1 && tcgetattr(STDIN_FILENO, &saved) == 0
    if isTTY {
        var noEcho = saved
        noEcho.c_lflag &= ~tcflag_t(ECHO)
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &noEcho)
    }
    defer {
        if isTTY {
            tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved)
            FileHandle.standardError.write(Data("\n".utf8))
        }
    }
    guard let line = readLine(strippingNewline: true) else {
        throw VaultCLIError("no password given (standard input closed); set COFFER_PASSWORD for scripts", code: 2)
    }
    return line
}
