#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CofferBackup
import CofferCore
import CofferStorage
import CofferVault
import Synchronization

/// A vault and the account in it: what protects the backup key with a password.
public struct VaultAccess: Sendable {
    public let client: VaultClient
    public let user: String
    /// The vault configuration file, remembered in the device home's link so later runs of the
    /// `coffer` command find the vault by themselves (`nil`: not recorded).
    public let configurationPath: String?

    public init(client: VaultClient, user: String, configurationPath: String? = nil) {
        self.client = client
        self.user = user
        self.configurationPath = configurationPath
    }
}

/// Something an app may want to show while ``Backups`` works; none of them is an error.
public enum BackupsEvent: Sendable {
    /// The heads anchored in the vault were read: the latest backup it knows of (`nil`: none yet).
    case latestAnchoredBackup(AnchoredHead?)
    /// The anchored heads could not be read (too few realms); the operation went ahead checked
    /// only against the heads this device has seen.
    case headsUnreadable(VaultError)
    /// A snapshot's head was anchored, or could not be (the snapshot is saved either way).
    case headStored(HeadStoreOutcome)
    /// A password change, disable or rotation that some realms had missed is now at all of them.
    case pendingVaultChangeCompleted
    /// Such a change was dropped: a later one (another device, a disable, a lockout) replaced it.
    case pendingVaultChangeSuperseded
    /// Such a change is still missing at these realms (they accept the old password / hold the old
    /// key); it is retried before every operation.
    case pendingVaultChangeStillMissing([RealmID])
}

/// The one type an app holds: a repository, this device's home, and (optionally) the vault that
/// protects its key with a password, with every protection of the `coffer` command:
///
/// - keys live in the device home (0600), never in the repository;
/// - with a vault, every backup and restore first reads the heads anchored in the vault and refuses
///   a repository the storage provider rolled back (`BackupError.Code.staleRepository`), and every
///   backup anchors its new head;
/// - a change of password that some realms missed is finished before each operation;
/// - on a new device, ``recover(storage:home:vault:password:events:)`` recovers the key, checks the
///   repository against the anchored heads and only then hands it over.
///
/// Errors are `BackupError` (repository, storage) and `VaultError` (vault); none names a CLI command.
public final class Backups: Sendable {
    public let repository: Repository
    public let home: DeviceHome
    private let key: BackupKey
    private let vaultState: Mutex<VaultAccess?>
    private let events: @Sendable (BackupsEvent) -> Void

    private init(repository: Repository, home: DeviceHome, key: BackupKey, vault: VaultAccess?,
                 events: @escaping @Sendable (BackupsEvent) -> Void) {
        self.repository = repository
        self.home = home
        self.key = key
        self.vaultState = Mutex(vault)
        self.events = events
    }

    /// The vault protecting this repository's key, if any.
    public var vault: VaultAccess? { vaultState.withLock { $0 } }

    /// The repository's id (names the key file and the vault link).
    public var repositoryID: String { repository.repositoryID }

    // MARK: Opening

    /// Creates a repository on `storage` with a new random key, saved in `home`. Show the returned
    /// key to the user once (``BackupKey/groupedDigits``): it opens the backups without any vault.
    /// With `vault` and `password`, the key is also protected in the vault (refused, with nothing
    /// replaced, if the account already has an active registration: `VaultError.registrationExists`).
    /// The password is checked against the vault's policy before anything is created; if the vault
    /// then fails (too few realms), the repository exists and its key is saved in `home`: open it
    /// and call ``enableVault(_:password:)`` again.
    public static func create(storage: any Storage, home: DeviceHome, options: RepositoryOptions = RepositoryOptions(),
                              vault: VaultAccess? = nil, password: String? = nil,
                              events: @escaping @Sendable (BackupsEvent) -> Void = { _ in }) async throws -> (Backups, BackupKey) {
        if let vault, let password { try vault.client.checkPasswordPolicy(password) }
        let key = BackupKey()
        let repo = try await Repository.initialize(storage: storage, key: key, options: options, deviceStore: home.keys)
        let backups = Backups(repository: repo, home: home, key: key, vault: nil, events: events)
        if let vault, let password {
            try await backups.enableVault(vault, password: password)
        }
        return (backups, key)
    }

    /// Opens the repository on `storage` with the key this device holds for it.
    /// - Throws: `BackupError` `.wrongKey` / `.keyReplaced` / `.notARepository`; a `KeyFileError`
    ///   when this device holds no key for it (then ``recover(storage:home:vault:password:events:)``
    ///   or ``open(storage:home:key:vault:events:)`` with the 64-digit key).
    public static func open(storage: any Storage, home: DeviceHome, vault: VaultAccess? = nil,
                            events: @escaping @Sendable (BackupsEvent) -> Void = { _ in }) async throws -> Backups {
        let id = try await Repository.readRepositoryID(storage: storage)
        guard let key = try home.keys.loadKey(repositoryID: id) else {
            throw KeyFileError(path: home.keys.keyFileURL(repositoryID: id).path,
                               message: "this device holds no key for repository \(id): recover it with the vault password, or give the 64-digit key")
        }
        return try await open(storage: storage, home: home, key: key, vault: vault, events: events)
    }

    /// Opens the repository with a key the user typed (or kept), and saves it in `home` for later.
    public static func open(storage: any Storage, home: DeviceHome, key: BackupKey, vault: VaultAccess? = nil,
                            events: @escaping @Sendable (BackupsEvent) -> Void = { _ in }) async throws -> Backups {
        let repo = try await Repository.open(storage: storage, key: key, deviceStore: home.keys)
        if try home.keys.loadKey(repositoryID: repo.repositoryID) == nil {
            try home.keys.saveKey(key, repositoryID: repo.repositoryID)
        }
        let backups = Backups(repository: repo, home: home, key: key, vault: vault, events: events)
        if let vault { backups.link(vault) }
        return backups
    }

    /// On a new device: recovers the key from the vault with the password, opens the repository on
    /// `storage` with it, saves it in `home`, and checks the repository against the heads anchored
    /// in the vault before returning (a rolled-back repository is refused here, before anything is
    /// restored from it).
    /// - Throws: `VaultError` (`.wrongPassword` with the guesses left, `.locked`, `.notRegistered`,
    ///   `.realmsUnavailable`, ...); `BackupError` `.wrongKey` when the vault's key is not this
    ///   repository's, `.staleRepository` when the storage serves an older state.
    public static func recover(storage: any Storage, home: DeviceHome, vault: VaultAccess, password: String,
                               events: @escaping @Sendable (BackupsEvent) -> Void = { _ in }) async throws -> Backups {
        let recovered = try await vault.client.recover(password: password, user: vault.user)
        let repo = try await Repository.open(storage: storage, key: recovered.key, deviceStore: home.keys)
        let backups = Backups(repository: repo, home: home, key: recovered.key, vault: vault, events: events)
        try await backups.checkHeads(action: "use this repository")
        try home.keys.saveKey(recovered.key, repositoryID: repo.repositoryID)
        backups.link(vault)
        return backups
    }

    // MARK: The vault

    /// Protects this repository's key with `password` in `vault`, links the two on this device and
    /// anchors every writer's newest head. Refused, with nothing replaced, when the account already
    /// has an active registration (`VaultError.registrationExists`).
    public func enableVault(_ vault: VaultAccess, password: String) async throws {
        try await vault.client.register(key: key, password: password, user: vault.user)
        vaultState.withLock { $0 = vault }
        link(vault)
        for outcome in await HeadGuard(vault: vault.client, user: vault.user, key: key).anchorEveryWriter(in: repository) {
            events(.headStored(outcome))
        }
    }

    private func link(_ vault: VaultAccess) {
        if let path = vault.configurationPath {
            home.saveVaultLink(VaultLink(vault: path, user: vault.user), repositoryID: repository.repositoryID)
        }
    }

    /// Retries this device's pending vault change (a password change, disable or rotation that
    /// some realms missed), then checks the repository against the anchored heads.
    private func checkHeads(action: String) async throws {
        guard let vault else { return }
        await finishPendingChange(vault)
        let guardian = HeadGuard(vault: vault.client, user: vault.user, key: key)
        let check = try await guardian.check(repository, action: action) { heads in
            self.events(.latestAnchoredBackup(heads.max(by: { $0.time < $1.time })))
        }
        if let e = check.unreadable { events(.headsUnreadable(e)) }
        if let r = check.reanchored { events(.headStored(r)) }
    }

    private func finishPendingChange(_ vault: VaultAccess) async {
        guard vault.client.pendingChange(user: vault.user) != nil else { return }
        switch try? await vault.client.repair(user: vault.user) {
        case .completed?, .nothingPending?:
            events(.pendingVaultChangeCompleted)
        case .superseded?:
            events(.pendingVaultChangeSuperseded)
        case .stillPending?, nil:
            if let left = vault.client.pendingChange(user: vault.user) {
                events(.pendingVaultChangeStillMissing(left.realmsNotUpdated(in: vault.client.configuration)))
            }
        }
    }

    // MARK: Operations

    /// Backs up `paths` into a new snapshot, reporting progress through `progress`. With a vault:
    /// checked against the anchored heads first (refused on a rolled-back repository, nothing
    /// written), and the new snapshot's head anchored after.
    public func backup(paths: [String], options: BackupOptions = BackupOptions(),
                       progress: @escaping @Sendable (BackupEvent) -> Void = { _ in }) async throws -> BackupSummary {
        try await checkHeads(action: "back up onto this repository")
        let summary = try await repository.backup(paths: paths, options: options, progress: progress)
        if let vault, !options.dryRun,
           let outcome = await HeadGuard(vault: vault.client, user: vault.user, key: key).anchorNewest(in: repository) {
            events(.headStored(outcome))
        }
        return summary
    }

    /// Restores `snapshot` (an id, a unique prefix, or `latest`) into `target`. With a vault:
    /// checked against the anchored heads first (refused on a rolled-back repository, nothing written).
    public func restore(snapshot: String, target: URL, options: RestoreOptions = RestoreOptions(),
                        progress: @Sendable (RestoreEvent) -> Void = { _ in }) async throws -> RestoreSummary {
        try await checkHeads(action: "restore from this repository")
        var summary: RestoreSummary?
        for try await event in repository.restore(snapshot: snapshot, target: target, options: options) {
            progress(event)
            if case .finished(let s) = event { summary = s }
        }
        guard let summary else { throw BackupError(.cancelled, message: "the restore ended without a result") }
        return summary
    }

    /// The snapshots, oldest first.
    public func snapshots() async throws -> [SnapshotInfo] {
        try await repository.snapshots()
    }
}
