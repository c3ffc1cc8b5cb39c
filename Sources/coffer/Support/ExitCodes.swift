import ArgumentParser
import CofferBackup
import CofferCore
import CofferStorage
import CofferVault
import Foundation
import Logging

/// The `coffer` exit codes. Documented in docs/CLI.md; scripts rely on them, so never renumber.
enum CofferExitCode: Int32, CaseIterable {
    /// Success.
    case ok = 0
    /// Any failure without a more specific code below.
    case failure = 1
    /// The backup finished and made a snapshot, but some files could not be read.
    case partialBackup = 3
    /// The repository does not exist at that location (no config object).
    case repositoryNotFound = 10
    /// The storage could not be reached or refused access (network, credentials, permissions, full disk).
    case storageUnreachable = 11
    /// The key does not open this repository.
    case wrongKey = 12
    /// Damaged or missing data was found (check, restore, or while reading the repository).
    case damaged = 13
    /// The repository shows an older head than this device has seen (rolled back or replaced).
    case staleRepository = 14
    /// No key is available for this repository (no device key file, `--key-file` or `COFFER_KEY`).
    case keyMissing = 15
    /// The restore target is not empty and `--overwrite` was not given, or a path already exists.
    case targetNotEmpty = 16
    /// Vault: wrong password; guesses remain (the message says how many).
    case wrongPassword = 20
    /// Vault: too many wrong guesses; the key was destroyed at the realms (the 64-digit key still works).
    case vaultLocked = 21
    /// Vault: this account has no key in the vault (never enabled, or disabled).
    case notRegistered = 22
    /// Vault: too few realms answered (the message names them and how many more are needed), or a
    /// registration did not reach enough realms to take effect.
    case vaultUnavailable = 23
    /// Vault: a realm answered inconsistently or with forged data (named in the message).
    case realmFault = 24
    /// Vault: a change (change-password, enable, disable, the vault part of `key rotate`) took
    /// effect but is done at some realms only: the named realms still accept the old password or
    /// hold the old key until this device's pending change reaches them.
    case vaultIncomplete = 25
    /// Vault: `enable` (or `init --password`) for an account that already has an active registration:
    /// nothing was replaced. Use `vault change-password` (needs the current password) or `enable --reset`.
    case registrationExists = 26
    /// Interrupted (Ctrl-C, SIGTERM): stopped cleanly; what was uploaded is kept for the next run.
    case interrupted = 130
    /// Bad command line or environment (unknown option, malformed key, missing `--repo`). EX_USAGE.
    case usage = 64

    var summary: String {
        switch self {
        case .ok: return "success"
        case .failure: return "failure (no more specific code applies)"
        case .partialBackup: return "partial backup: snapshot made, some files could not be read"
        case .repositoryNotFound: return "repository not found"
        case .storageUnreachable: return "storage unreachable or access denied"
        case .wrongKey: return "wrong key for this repository"
        case .damaged: return "damaged or missing data found"
        case .staleRepository: return "stale repository: older head than this device or the vault has seen"
        case .keyMissing: return "no key available for this repository"
        case .targetNotEmpty: return "restore target not empty (use --overwrite)"
        case .usage: return "usage error"
        case .wrongPassword: return "vault: wrong password (guesses left)"
        case .vaultLocked: return "vault: locked, the key was destroyed after too many wrong guesses"
        case .notRegistered: return "vault: no key registered for this account"
        case .vaultUnavailable: return "vault: not enough realms answered"
        case .realmFault: return "vault: a realm answered inconsistently"
        case .vaultIncomplete: return "vault: change done at some realms only (they still accept the old password / hold the old key)"
        case .registrationExists: return "vault: the account already has an active registration (change-password, or enable --reset)"
        case .interrupted: return "interrupted"
        }
    }
}

/// An error of the CLI itself (as opposed to the libraries'): what to say and which code to exit with.
struct CLIError: Error, CustomStringConvertible {
    var code: CofferExitCode
    var message: String
    /// What the user can do about it, printed on its own line.
    var hint: String?

    init(_ code: CofferExitCode, _ message: String, hint: String? = nil) {
        self.code = code
        self.message = message
        self.hint = hint
    }

    var description: String { message }
}

/// The one place where errors become a message and an exit code.
enum ErrorReport {
    /// Maps any error to the exit code and the user-facing message (plus an optional hint).
    /// Messages come from the libraries' `description`s, which never carry secrets.
    static func classify(_ error: any Error) -> (code: CofferExitCode, message: String, hint: String?) {
        switch error {
        case let e as CLIError:
            return (e.code, e.message, e.hint)
        case let e as ValidationError:
            return (.usage, e.message, nil)
        case let e as BackupKeyError:
            return (.usage, "\(e)", "Give the key as 64 hex digits (spaces and dashes allowed).")
        case let e as KeyFileError:
            return (.keyMissing, e.message, nil)
        case let e as StorageError:
            return classify(storage: e)
        case let e as BackupError:
            return classify(backup: e)
        case let e as VaultError:
            return classify(vault: e)
        case let e as VaultConfigurationError:
            return (.usage, "\(e)", "Check --vault / COFFER_VAULT: `coffer realm cluster` writes a development vault.json.")
        default:
            return (.failure, String(describing: error), nil)
        }
    }

    static func classify(backup e: BackupError) -> (code: CofferExitCode, message: String, hint: String?) {
        switch e.code {
        case .keyReplaced:
            return (.wrongKey, e.message, nil)
        case .wrongKey:
            if e.keyTypo != nil { return (.wrongKey, e.message, "Correct that digit in COFFER_KEY or the --key-file, then run the command again.") }
            return (.wrongKey, e.message, "Check --key-file / COFFER_KEY, or that --repo names the repository you mean.")
        case .notARepository:
            return (.repositoryNotFound, e.message, "Check --repo / COFFER_REPO, or create a repository with `coffer init`.")
        case .repositoryDamaged, .dataDamaged, .dataMissing:
            return (.damaged, e.message, "Run `coffer check --read-data` to list every damaged or missing object.")
        case .staleRepository:
            return (.staleRepository, e.message,
                    "The storage shows an older state than this device or the vault has seen (rolled back, an old copy, or hidden objects). Nothing was changed. Use the current copy of the repository; if it is the current one, the provider is serving old data: report it and do not prune.")
        case .partialBackup:
            return (.partialBackup, e.message, nil)
        case .targetNotEmpty:
            return (.targetNotEmpty, e.message, "Restore into an empty folder, or add --overwrite to replace files there.")
        case .invalidArgument:
            return (.usage, e.message, nil)
        case .storage:
            if let s = e.underlying as? StorageError {
                let (code, _, hint) = classify(storage: s)
                return (code, e.message, hint)
            }
            return (.storageUnreachable, e.message, nil)
        case .alreadyInitialized:
            return (.failure, e.message, "Nothing was changed. Use the existing repository, or choose another location.")
        default:   // .snapshotNotFound, .pathNotFound, .fileSystem, .cancelled, and codes added later
            return (.failure, e.message, nil)
        }
    }

    static func classify(vault e: VaultError) -> (code: CofferExitCode, message: String, hint: String?) {
        switch e.code {
        case .wrongPassword where (e.attemptsLeft ?? 0) > 0, .lockNotConfirmed:
            return (.wrongPassword, e.message, nil)
        case .passwordTooShort:
            return (.usage, e.message, "Choose a longer password; `minPasswordLength` in vault.json's policy sets the minimum.")
        case .wrongPassword, .locked:
            return (.vaultLocked, e.message, "The vault no longer holds this key. The 64-digit key still opens the backups.")
        case .notRegistered:
            return (.notRegistered, e.message, nil)
        case .realmsUnavailable, .notEffective:
            return (.vaultUnavailable, e.message, "Try again when more realms are reachable; no guess was spent at realms that did not answer.")
        case .realmFault:
            return (.realmFault, e.message, "Report the named realms to the vault operators.")
        case .registrationExists:
            return (.registrationExists, e.message,
                    "Run `coffer vault change-password` (asks for the current password), or `coffer vault enable --reset` if the password is forgotten (the realms count every reset).")
        default:   // .token, .policy, and codes added later
            return (.failure, e.message, nil)
        }
    }

    static func classify(storage e: StorageError) -> (code: CofferExitCode, message: String, hint: String?) {
        switch e.code {
        case .missingContainer:
            return (.repositoryNotFound, e.message, "Check --repo / COFFER_REPO, or create a repository with `coffer init`.")
        case .accessDenied:
            return (.storageUnreachable, e.message, "Check the credentials and permissions for this storage.")
        case .connectionRefused:
            return (.storageUnreachable, e.message,
                    "Nothing listens at that endpoint: check AWS_ENDPOINT_URL (or the endpoint= of the s3:// URL) and that the server runs. Nothing was changed.")
        case .transient, .clockSkew:
            return (.storageUnreachable, e.message, "The storage could not be reached; try again later. Nothing was lost.")
        case .noSpace:
            return (.storageUnreachable, e.message, "Free some space or raise the quota; the repository was left as it was.")
        case .notFound, .rangeNotSatisfiable:
            return (.damaged, e.message, "Run `coffer check` to see which objects are missing or damaged.")
        default:   // .invalidName, .permanent, .alreadyExists, and codes added later
            return (.failure, e.message, nil)
        }
    }

    /// Runs a command body: on error prints `coffer: <message>` (and a hint) to stderr, logs the
    /// details, and exits with the mapped code.
    static func run(logger: Logger, _ body: () async throws -> CofferExitCode) async throws {
        let code: CofferExitCode
        do {
            code = try await body()
        } catch let e as ExitCode {
            throw e
        } catch let e as CleanExit {
            throw e
        } catch where Interrupts.received {
            logger.debug("interrupted: \(String(reflecting: error))")
            report(.interrupted, "interrupted; nothing is lost, and data already uploaded is reused by the next run", hint: nil)
            code = .interrupted
        } catch {
            let (c, message, hint) = classify(error)
            logger.debug("error detail: \(String(reflecting: error))")
            report(c, message, hint: hint)
            code = c
        }
        if code != .ok { throw ExitCode(code.rawValue) }
    }

    /// Prints an error the one way of every command: `coffer: message` and the hint indented, or
    /// with `--json` one `{"message_type":"error",...}` line.
    static func report(_ code: CofferExitCode, _ message: String, hint: String?) {
        if JSONOutput.requested {
            JSONOutput.printError(code: code, message: message, hint: hint)
            return
        }
        Terminal.err("coffer: \(message)\n")
        if let hint { Terminal.err("  \(hint)\n") }
    }
}
