import ArgumentParser
import CofferBackup
import CofferCore
import CofferS3
import CofferStorage
import CofferWebDAV
import Foundation
import Logging

/// Options every repository command takes.
struct GlobalOptions: ParsableArguments {
    @Option(name: [.customShort("r"), .long], help: ArgumentHelp(
        "The repository: a folder path, file:///path, s3://BUCKET/PREFIX, webdav[s]://HOST[:PORT]/PATH or rclone:REMOTE:PATH. Default: $COFFER_REPO.",
        valueName: "location"))
    var repo: String?

    @Option(name: .customLong("key-file"), help: ArgumentHelp(
        "A file holding the 64-digit key (instead of the device key file, $COFFER_KEY_FILE or $COFFER_KEY).", valueName: "file"))
    var keyFile: String?

    @Flag(name: [.short, .long], help: "Write internal details (the log) to stderr.")
    var verbose = false

    @Flag(name: .customLong("no-progress"), help: "No progress line (on a terminal) and no progress lines every 10 s (elsewhere, $COFFER_PROGRESS_FPS).")
    var noProgress = false

    var logger: Logger { CLILog.logger(verbose: verbose) }

    /// The options for `location` and nothing else set (a command that opens a repository it was
    /// given another way, e.g. `vault enable --repo`), without building an argument list to parse.
    static func forRepository(_ location: String) -> GlobalOptions {
        var o = GlobalOptions()
        o.repo = location
        o.keyFile = nil
        o.verbose = false
        o.noProgress = false
        return o
    }
}

/// Opens storage and repositories from the command line and the environment, and closes what it opened.
struct RepositoryAccess {
    let options: GlobalOptions
    let environment: [String: String]
    let logger: Logger
    let deviceStore: DeviceKeyStore
    /// How the user gives this repository's key, for hints: `--key-file FILE or COFFER_KEY` here,
    /// `--from-key-file FILE or COFFER_FROM_KEY` for `copy`'s source.
    var keyOptions = "--key-file FILE or COFFER_KEY"

    init(_ options: GlobalOptions, environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.options = options
        self.environment = environment
        self.logger = options.logger
        self.deviceStore = DeviceKeyStore()
    }

    /// `--repo`, else `$COFFER_REPO`.
    func location() throws -> String {
        if let r = options.repo, !r.isEmpty { return r }
        if let r = environment["COFFER_REPO"], !r.isEmpty { return r }
        throw CLIError(.usage, "no repository given", hint: "Use --repo LOCATION or set COFFER_REPO (a folder path, file:///path, s3://bucket/prefix, webdav[s]://host/path or rclone:remote:path).")
    }

    /// `COFFER_NETWORK_BUDGET`: seconds one storage request may spend failing and being retried
    /// (default 60; `0` gives up at the first failure).
    func networkBudget() throws -> Duration? {
        guard let text = environment["COFFER_NETWORK_BUDGET"], !text.isEmpty else { return .seconds(60) }
        guard let s = Double(text), s.isFinite, s >= 0 else {
            throw CLIError(.usage, "COFFER_NETWORK_BUDGET must be a number of seconds, not \"\(text)\"")
        }
        return .milliseconds(Int64(s * 1000))
    }

    /// Runs `body` with the storage at the repository location; S3 connections are closed afterwards.
    func withStorage<T>(create: Bool = false, _ body: (any Storage) async throws -> T) async throws -> T {
        let where_ = try location()
        let remote: (any Storage)?
        if where_.hasPrefix("s3://") {
            var config = try S3Configuration.resolve(url: where_, environment: environment)
            config.options.retryBudget = try networkBudget()
            config.options.onRetry = { n in
                let what = n.refused ? "refused the connection" : "failed (\(n.problem))"
                Terminal.err("coffer: S3 endpoint \(n.endpoint) \(what); retry \(n.attempt) of \(n.maxAttempts) in \(Units.seconds(n.delay.seconds))\n")
            }
            remote = S3Storage(configuration: config, logger: logger)
        } else if where_.hasPrefix("webdav://") || where_.hasPrefix("webdavs://") {
            remote = try WebDAVStorage.open(url: where_, environment: environment, logger: logger)
        } else if where_.hasPrefix("rclone:") {
            // Starts `rclone serve webdav` on loopback; close() stops it.
            remote = try await Rclone.open(location: where_, environment: environment, logger: logger)
        } else {
            remote = nil
        }
        if let remote {
            do {
                let result = try await body(remote)
                await remote.close()
                return result
            } catch {
                await remote.close()
                throw error
            }
        }
        let local = try StorageLocation.open(where_, create: create)
        logger.debug("repository folder \(local.location)")
        return try await body(local)
    }

    /// A key given explicitly: `--key-file`, else `$COFFER_KEY_FILE`, else `$COFFER_KEY`; `nil` when
    /// none is set. A file keeps the key out of the environment of every process the shell starts.
    func explicitKey() throws -> BackupKey? {
        if let path = options.keyFile {
            return try DeviceKeyStore.readKeyFile(at: URL(fileURLWithPath: path))
        }
        if let path = environment["COFFER_KEY_FILE"], !path.isEmpty {
            return try DeviceKeyStore.readKeyFile(at: URL(fileURLWithPath: path))
        }
        if let digits = environment["COFFER_KEY"], !digits.isEmpty {
            do {
                return try BackupKey(digits: digits)
            } catch {
                throw CLIError(.usage, "COFFER_KEY is not a valid key: \(error)",
                               hint: "Give the key as 64 hex digits (spaces and dashes allowed).")
            }
        }
        return nil
    }

    /// The key for the repository on `storage`: explicit (`--key-file`, `$COFFER_KEY`), else this
    /// device's key file for the repository's id.
    func key(for storage: any Storage) async throws -> BackupKey {
        if let key = try explicitKey() { return key }
        let id = try await Repository.readRepositoryID(storage: storage)
        if let key = try deviceStore.loadKey(repositoryID: id) {
            logger.debug("using the device key file \(deviceStore.keyFileURL(repositoryID: id).path)")
            return key
        }
        if let replaced = await KeyRotation.replacedDeviceKeyMessage(storage: storage, deviceStore: deviceStore) {
            throw CLIError(.wrongKey, replaced, hint: "Get the new key: `coffer vault recover --repo \(storage.location)`, or --key-file FILE with the new 64 digits.")
        }
        throw CLIError(.keyMissing, "this device has no key for repository \(id) at \(storage.location)",
                       hint: "Give the key with \(keyOptions) (64 digits). Looked in \(deviceStore.home.path)/keys.")
    }

    /// Runs `body` with the opened repository (config verified, index loaded).
    func withRepository<T>(_ body: (Repository) async throws -> T) async throws -> T {
        try await withStorage { storage in
            let key = try await key(for: storage)
            let repo = try await Repository.open(storage: storage, key: key, deviceStore: deviceStore)
            logger.debug("opened repository \(repo.repositoryID)")
            if KeyRotation.isUnfinished(repositoryID: repo.repositoryID, deviceStore: deviceStore) {
                throw CLIError(.failure, "a key rotation of repository \(repo.repositoryID) is unfinished on this device",
                               hint: "Run `coffer key rotate` to finish it first: what is backed up before that would not be carried over.")
            }
            return try await body(repo)
        }
    }
}
