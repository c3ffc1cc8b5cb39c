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
    @Option(help: "Seconds to wait for each realm. Default: $COFFER_VAULT_TIMEOUT, else 10.") var timeout: Int?
    @Option(name: .customLong("password-file"), help: ArgumentHelp(
        "Read the vault password from the first line of this file. Default: $COFFER_PASSWORD_FILE.", valueName: "file"))
    var passwordFile: String?
    @Option(name: .customLong("password-command"), help: ArgumentHelp(
        "Run this command (/bin/sh -c) and use the first line it prints as the vault password. Default: $COFFER_PASSWORD_COMMAND.",
        valueName: "command"))
    var passwordCommand: String?

    var environment: [String: String] { ProcessInfo.processInfo.environment }

    /// `--vault`, else `$COFFER_VAULT`.
    var configPath: String? { (vault ?? environment["COFFER_VAULT"]).flatMap { $0.isEmpty ? nil : $0 } }

    func account() throws -> String {
        guard let u = user ?? environment["COFFER_USER"], !u.isEmpty else {
            throw CLIError(.usage, "no account: pass --user ID or set COFFER_USER")
        }
        return u
    }

    func client() async throws -> VaultClient {
        guard let path = vault ?? environment["COFFER_VAULT"], !path.isEmpty else {
            throw CLIError(.usage, "no vault configuration: pass --vault FILE or set COFFER_VAULT (`coffer realm cluster` writes one)")
        }
        return try await Self.client(configPath: path, tokenCommand: tokenCommand ?? environment["COFFER_VAULT_TOKEN_COMMAND"],
                                     timeout: timeout ?? Self.timeout(environment))
    }

    /// `COFFER_VAULT_TIMEOUT` (seconds per realm, at least 1), else 10: the default of `--timeout`
    /// and what a backup's anchored heads wait for each realm.
    static func timeout(_ environment: [String: String]) -> Int {
        environment["COFFER_VAULT_TIMEOUT"].flatMap(Int.init).map { max(1, $0) } ?? 10
    }

    /// The vault client for the configuration at `configPath`: tokens from `tokenCommand` when
    /// given, else from the development tenant key the configuration names; `timeout` seconds per realm.
    static func client(configPath path: String, tokenCommand: String?, timeout: Int) async throws -> VaultClient {
        let url = URL(fileURLWithPath: path)
        let raw = try VaultConfiguration.load(from: url)
        let config = try raw.validated()
        let tokens: any TokenProvider
        if let cmd = tokenCommand, !cmd.isEmpty {
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
            do { return (try BackupKey(digits: digits), repositoryID) } catch { throw CLIError(.usage, "COFFER_KEY: \(error)") }
        }
        if let repositoryID {
            guard let key = try DeviceKeyStore().loadKey(repositoryID: repositoryID) else {
                throw CLIError(.keyMissing, "this device holds no key for repository \(repositoryID)")
            }
            return (key, repositoryID)
        }
        if let location = repo ?? env["COFFER_REPO"], !location.isEmpty {
            // The device key of that repository, checked against the repository before it is protected.
            let access = RepositoryAccess(GlobalOptions.forRepository(location))
            return try await access.withRepository { repository in
                guard let key = try access.deviceStore.loadKey(repositoryID: repository.repositoryID) else {
                    throw CLIError(.keyMissing, "this device holds no key for repository \(repository.repositoryID)")
                }
                return (key, repository.repositoryID)
            }
        }
        throw CLIError(.usage, "no key: pass --repo LOCATION (or set COFFER_REPO), --key-file FILE, set COFFER_KEY, or pass --repository-id ID")
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
    @Flag(name: .long, help: "Print the result as JSON on stdout (messages go to stderr).") var json = false
    @OptionGroup var keySource: KeySourceOptions
    @Flag(help: "Replace an existing registration without the current password (reset-scoped tokens; counted by every realm).")
    var reset = false

    func run() async throws {
        try await runMapped {
            let (key, repositoryID) = try await keySource.keyAndRepository()
            let user = try options.account()
            let client = try await options.client()
            await finishPendingChange(client, user: user)
            let password = try readPassword(prompt: "New vault password: ", confirm: true, options: options)
            try client.checkPasswordPolicy(password)
            let report = try await client.register(key: key, password: password, user: user, replace: reset ? .reset : .refuse)
            let what = reset ? "The vault registration of \(user) was reset: it now protects this key under the new password."
                : "The vault now protects this key for \(user)."
            let complete = printRegistration(report, client: client, what: what)
            if json { try JSONOutput.print(VaultRegistrationJSON(report, user: user, client: client)) }
            if let repositoryID, let path = options.configPath { VaultLinks.save(DeviceKeyStore(), repositoryID: repositoryID, vault: path, user: user) }
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
    @Flag(name: .long, help: "Print the result as JSON on stdout (messages go to stderr).") var json = false

    func run() async throws {
        try await runMapped {
            let user = try options.account()
            let client = try await options.client()
            await finishPendingChange(client, user: user)
            let current = try readCurrentPassword(prompt: "Current vault password for \(user): ")
            let password = try readPassword(prompt: "New vault password: ", confirm: true, options: options)
            try client.checkPasswordPolicy(password)
            let report = try await client.changePassword(currentPassword: current, newPassword: password, user: user)
            let complete = printRegistration(report, client: client, what: "The new password is active for \(user).")
            if json { try JSONOutput.print(VaultRegistrationJSON(report, user: user, client: client)) }
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
    @Flag(name: .long, help: "Print the result as JSON on stdout (messages go to stderr).") var json = false
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
            let password = try readPassword(prompt: "Vault password for \(user): ", confirm: false, options: options)
            let result = try await client.recover(password: password, user: user)
            var recoveredID: String?
            if let location = repositoryLocation {
                // Check the recovered key against the repository before the device keeps it.
                let access = RepositoryAccess(GlobalOptions.forRepository(location))
                let id = try await access.withStorage { storage in
                    let repository = try await Repository.open(storage: storage, key: result.key, deviceStore: nil)
                    return repository.repositoryID
                }
                try access.deviceStore.saveKey(result.key, repositoryID: id)
                recoveredID = id
                sayResult("Recovered the key of repository \(id); saved to \(access.deviceStore.keyFileURL(repositoryID: id).path) (mode 0600).")
                if let path = options.configPath { VaultLinks.save(access.deviceStore, repositoryID: id, vault: path, user: user) }
                // Before anything is restored: the anchored heads against what the storage shows.
                do {
                    try await access.withStorage { storage in
                        let repository = try await Repository.open(storage: storage, key: result.key, deviceStore: access.deviceStore)
                        try await HeadAnchor(client: client, user: user, key: result.key)
                            .check(repository, doing: "the recovery check", action: "restore from this repository", latest: { sayResult($0) })
                    }
                } catch let e as BackupError where e.code == .staleRepository {
                    printErr("note: the key is recovered and saved, but do not restore from this copy of the repository:")
                    throw e
                }
            }
            if let repositoryID {
                let store = DeviceKeyStore()
                try store.saveKey(result.key, repositoryID: repositoryID)
                sayResult("Recovered the key; saved to \(store.keyFileURL(repositoryID: repositoryID).path) (mode 0600).")
                if let path = options.configPath { VaultLinks.save(store, repositoryID: repositoryID, vault: path, user: user) }
            }
            if let keyOut {
                try DeviceKeyStore.writeKeyFile(result.key, to: URL(fileURLWithPath: keyOut))
                sayResult("Recovered the key; written to \(keyOut) (mode 0600).")
            }
            if repositoryLocation == nil {
                // No storage to check against: show what the vault anchors, and keep it on this device.
                await HeadAnchor(client: client, user: user, key: result.key).report(repositoryID: repositoryID, store: DeviceKeyStore())
            }
            if json {
                var out = VaultRecoverJSON(user: user, version: result.version.hex, repositoryId: recoveredID ?? repositoryID,
                                           keyFile: recoveredID.map { DeviceKeyStore().keyFileURL(repositoryID: $0).path }
                                               ?? repositoryID.map { DeviceKeyStore().keyFileURL(repositoryID: $0).path },
                                           keyOut: keyOut, registrationRenewed: result.rotation != nil,
                                           faulty: result.faulty.map(RealmProblemJSON.init), down: result.down.map(RealmProblemJSON.init))
                out.pending = result.rotation?.pending.map(RealmProblemJSON.init) ?? []
                try JSONOutput.print(out)
            }
            for p in result.faulty { printErr("warning: \(p) — report this to the vault operators") }
            for p in result.down { printErr("note: \(p)") }
            if let rotation = result.rotation {
                sayResult("Vault registration renewed (\(rotation.acknowledged.count) of \(client.configuration.n) realms).")
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
    @Flag(name: .long, help: "Print the result as JSON on stdout (messages go to stderr).") var json = false

    func run() async throws {
        try await runMapped {
            let user = try options.account()
            let client = try await options.client()
            await finishPendingChange(client, user: user)
            let report = try await client.disable(user: user)
            let n = client.configuration.n
            if json {
                try JSONOutput.print(VaultDisableJSON(user: user, complete: report.complete, realmsTotal: n,
                                                      realmsCleared: report.cleared.map(\.hex), remaining: report.remaining.map(RealmProblemJSON.init)))
            }
            if report.complete {
                sayResult("The vault no longer holds a key for \(user): all \(n) realms confirmed.")
            } else {
                sayResult("The vault key for \(user) is disabled at \(report.cleared.count) of \(n) realms (enough to take effect), but not yet everywhere.")
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
    @Flag(name: .long, help: "Print the result as JSON on stdout (messages go to stderr).") var json = false

    func run() async throws {
        try await runMapped {
            let user = try options.account()
            let client = try await options.client()
            // Finish a change that some realms missed, while it is still the newest one.
            let stillPending = await finishPendingChange(client, user: user)
            let status = await client.status(user: user)
            let t = client.configuration.threshold, n = client.configuration.n
            if json { try JSONOutput.print(VaultStatusJSON(status, user: user, threshold: t, n: n, pending: stillPending != nil)) }
            if let v = status.activeVersion {
                sayResult("\(user): protected (version \(v.hex)), \(status.attemptsLeft ?? 0) guesses left; \(status.converged.count) of \(n) realms agree (\(t) needed).")
            } else if status.realms.contains(where: { if case .locked = $0.state { return true } else { return false } }) {
                sayResult("\(user): locked or inconsistent: no \(t) realms hold a usable registration.")
            } else if n - status.down.count < t {
                sayResult("\(user): unknown: only \(n - status.down.count) of \(n) realms answered (\(t) needed).")
            } else {
                sayResult("\(user): not protected by the vault.")
            }
            for r in status.realms {
                let s: String
                switch r.state {
                case .active(let v, let left): s = "version \(v.hex), \(left) guesses left" + (status.stale.contains(r.realmID) ? " (stale: repaired by the next recovery or enable)" : "")
                case .locked(let v): s = "locked (destroyed version \(v.hex))"
                case .notRegistered: s = "no registration"
                case .down(let why): s = "DOWN: \(why)"
                }
                sayResult("  realm \(r.realmID.hex)  \(r.url)  \(s)")
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
    sayResult(what)
    if report.complete {
        sayResult("Version \(report.version.hex), stored at \(n) of \(n) realms: every realm confirmed, none accepts an older password or holds an older key.")
        return true
    }
    sayResult("Version \(report.version.hex), stored at \(report.acknowledged.count) of \(n) realms (enough to take effect), but not yet everywhere.")
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

/// A result line: on stdout, or on stderr with `--json` (stdout then holds only the JSON).
func sayResult(_ s: String) {
    if JSONOutput.requested { printErr(s) } else { Terminal.line(s) }
}

func printErr(_ s: String) {
    FileHandle.standardError.write(Data((s + "\n").utf8))
}

/// A vault command failed: a message and an exit code.
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
        ErrorReport.report(code, message, hint: hint)
        throw ExitCode(code.rawValue)
    }
}

/// The current password for a change: `COFFER_CURRENT_PASSWORD` if set (not trimmed), else a prompt on
/// the terminal with echo off.
func readCurrentPassword(prompt: String) throws -> String {
    if let p = ProcessInfo.processInfo.environment["COFFER_CURRENT_PASSWORD"] {
        guard !p.isEmpty else { throw CLIError(.usage, "COFFER_CURRENT_PASSWORD is empty") }
        return p
    }
    let p = try promptNoEcho(prompt)
    guard !p.isEmpty else { throw CLIError(.usage, "the password must not be empty") }
    return p
}

/// The vault password, first match wins (docs/CLI.md, "The vault password"): `--password-file`,
/// `--password-command`, `COFFER_PASSWORD_FILE`, `COFFER_PASSWORD_COMMAND`, `COFFER_PASSWORD` (not
/// trimmed), else a prompt on the terminal with echo off (asked twice when `confirm`). Errors name
/// the source, never the password.
func readPassword(prompt: String, confirm: Bool, options: VaultOptions) throws -> String {
    let env = ProcessInfo.processInfo.environment
    if options.passwordFile != nil && options.passwordCommand != nil {
        throw CLIError(.usage, "give either --password-file or --password-command, not both")
    }
    if let file = options.passwordFile { return try PasswordSource.file(file, from: "--password-file") }
    if let command = options.passwordCommand { return try PasswordSource.command(command, from: "--password-command") }
    if let file = env["COFFER_PASSWORD_FILE"], !file.isEmpty { return try PasswordSource.file(file, from: "COFFER_PASSWORD_FILE") }
    if let command = env["COFFER_PASSWORD_COMMAND"], !command.isEmpty {
        return try PasswordSource.command(command, from: "COFFER_PASSWORD_COMMAND")
    }
    if let p = env["COFFER_PASSWORD"] {
        guard !p.isEmpty else { throw CLIError(.usage, "COFFER_PASSWORD is empty") }
        return p
    }
    let first = try promptNoEcho(prompt)
    guard !first.isEmpty else { throw CLIError(.usage, "the password must not be empty") }
    if confirm {
        let second = try promptNoEcho("Repeat: ")
        guard second == first else { throw CLIError(.usage, "the passwords do not match") }
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
        throw CLIError(.usage, "no password given (standard input closed); set COFFER_PASSWORD for scripts")
    }
    return line
}

// MARK: - JSON (docs/schemas/vault-*.json)

/// A realm that did not take part, and why.
struct RealmProblemJSON: Encodable {
    var realmId: String
    var url: String
    var reason: String

    init(_ p: RealmProblem) {
        realmId = p.realmID.hex
        url = p.url
        reason = p.reason
    }
}

/// `coffer vault enable|change-password --json`.
struct VaultRegistrationJSON: Encodable {
    var user: String
    var version: String
    var realmsTotal: Int
    var realmsStored: [String]
    var complete: Bool
    var pending: [RealmProblemJSON]

    init(_ r: RegistrationReport, user: String, client: VaultClient) {
        self.user = user
        version = r.version.hex
        realmsTotal = client.configuration.n
        realmsStored = r.acknowledged.map(\.hex)
        complete = r.complete
        pending = r.pending.map(RealmProblemJSON.init)
    }
}

/// `coffer vault disable --json`.
struct VaultDisableJSON: Encodable {
    var user: String
    var complete: Bool
    var realmsTotal: Int
    var realmsCleared: [String]
    var remaining: [RealmProblemJSON]
}

/// `coffer vault recover --json`. The key itself is never printed: it goes to the key file.
struct VaultRecoverJSON: Encodable {
    var user: String
    var version: String
    var repositoryId: String?
    var keyFile: String?
    var keyOut: String?
    var registrationRenewed: Bool
    var faulty: [RealmProblemJSON]
    var down: [RealmProblemJSON]
    var pending: [RealmProblemJSON] = []
}

/// `coffer vault status --json`.
struct VaultStatusJSON: Encodable {
    struct Realm: Encodable {
        var realmId: String
        var url: String
        /// active, locked, not_registered or down.
        var state: String
        var version: String?
        var attemptsLeft: Int?
        var stale: Bool
        var reason: String?
    }
    var user: String
    /// protected, locked, unknown or not_protected.
    var state: String
    var version: String?
    var attemptsLeft: Int?
    var realmsAgreeing: Int
    var realmsTotal: Int
    var threshold: Int
    var changePending: Bool
    var realms: [Realm]

    init(_ s: VaultStatus, user: String, threshold t: Int, n: Int, pending: Bool) {
        self.user = user
        if s.activeVersion != nil {
            state = "protected"
        } else if s.realms.contains(where: { if case .locked = $0.state { return true } else { return false } }) {
            state = "locked"
        } else if n - s.down.count < t {
            state = "unknown"
        } else {
            state = "not_protected"
        }
        version = s.activeVersion?.hex
        attemptsLeft = s.activeVersion == nil ? nil : s.attemptsLeft
        realmsAgreeing = s.converged.count
        realmsTotal = n
        threshold = t
        changePending = pending
        realms = s.realms.map { r in
            var out = Realm(realmId: r.realmID.hex, url: r.url, state: "", stale: s.stale.contains(r.realmID))
            switch r.state {
            case .active(let v, let left):
                out.state = "active"
                out.version = v.hex
                out.attemptsLeft = left
            case .locked(let v):
                out.state = "locked"
                out.version = v.hex
            case .notRegistered:
                out.state = "not_registered"
            case .down(let why):
                out.state = "down"
                out.reason = why
            }
            return out
        }
    }
}

/// The vault password from a file or a command: the first line, without its line ending.
enum PasswordSource {
    static func file(_ path: String, from source: String) throws -> String {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw CLIError(.usage, "\(source): cannot read the password file \(path): \((error as NSError).localizedDescription)")
        }
        return try firstLine(data, from: "\(source) \(path)")
    }

    /// Runs `/bin/sh -c command` (stdin and stderr are this process's, so it may prompt) and takes
    /// the first line of its stdout. A failing or silent command is an error.
    static func command(_ command: String, from source: String) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", command]
        let out = Pipe()
        p.standardOutput = out
        do {
            try p.run()
        } catch {
            throw CLIError(.usage, "\(source): cannot run /bin/sh: \(error)")
        }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        if p.terminationReason == .uncaughtSignal {
            throw CLIError(.usage, "\(source): the password command was killed by signal \(p.terminationStatus); no password")
        }
        guard p.terminationStatus == 0 else {
            throw CLIError(.usage, "\(source): the password command failed (exit status \(p.terminationStatus)); no password")
        }
        return try firstLine(data, from: "\(source)'s command")
    }

    static func firstLine(_ data: Data, from source: String) throws -> String {
        var line = Substring(String(decoding: data, as: UTF8.self)).prefix { $0 != "\n" && $0 != "\r\n" }
        if line.hasSuffix("\r") { line = line.dropLast() }
        guard !line.isEmpty else { throw CLIError(.usage, "\(source) gave an empty password") }
        return String(line)
    }
}
