#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CofferCore
import CofferStorage

/// An open, encrypted backup repository on some ``Storage``.
///
/// ```swift
/// let storage = try LocalStorage(root: url)
/// let repo = try await Repository.open(storage: storage, key: key, deviceStore: DeviceKeyStore())
/// for try await event in repo.backup(paths: ["/data/app"]) {
///     if case .finished(let summary) = event { print(summary.snapshotID) }
/// }
/// ```
///
/// Object layout on the storage (bytes specified in `docs/REPOSITORY-OBJECTS.md`): `config`,
/// `data/xx/<packid>`, `index/<id>`, `snapshots/<id>`, `marks/<id>` (prune's pending deletions).
/// Writes go packs → index → snapshot, so a crash at any moment leaves every earlier snapshot whole.
public final class Repository: Sendable {
    /// The storage this repository lives on.
    public let storage: any Storage
    /// 32 lowercase hex digits: the repository id from its config (salts every subkey).
    public let repositoryID: String
    /// The device store used for the head check and this device's writer id, if any.
    public let deviceStore: DeviceKeyStore?

    let engine: Engine

    init(storage: any Storage, repositoryID: String, deviceStore: DeviceKeyStore?, engine: Engine) {
        self.storage = storage
        self.repositoryID = repositoryID
        self.deviceStore = deviceStore
        self.engine = engine
    }

    /// Creates a new repository on an empty storage: writes the authenticated config.
    /// - Parameters:
    ///   - storage: where the repository goes; must not hold a `config` already.
    ///   - key: the root backup key `K` (the caller shows its 64 digits to the user).
    ///   - options: chunking and pack parameters stored in the config.
    ///   - deviceStore: when given, the key is saved there (0600) under the new repository id.
    /// - Throws: ``BackupError`` `.alreadyInitialized` when a config exists (nothing is changed),
    ///   `.storage` when the storage fails.
    public static func initialize(storage: any Storage, key: BackupKey, options: RepositoryOptions = RepositoryOptions(),
                                  deviceStore: DeviceKeyStore? = nil) async throws(BackupError) -> Repository {
        try await Engine.initialize(storage: storage, key: key, options: options, deviceStore: deviceStore)
    }

    /// Opens a repository: verifies the config (telling a wrong key from damage) and loads the index.
    /// - Throws: ``BackupError`` `.notARepository`, `.wrongKey`, `.repositoryDamaged`, `.dataDamaged`
    ///   (an index object failed verification), `.storage`.
    public static func open(storage: any Storage, key: BackupKey, deviceStore: DeviceKeyStore? = nil) async throws(BackupError) -> Repository {
        try await Engine.open(storage: storage, key: key, deviceStore: deviceStore)
    }

    /// The repository id (32 hex digits) read from the config without the key, so a caller can
    /// find the device's key file for it. The config's checksum is verified.
    /// - Throws: ``BackupError`` `.notARepository`, `.repositoryDamaged`, `.storage`.
    public static func readRepositoryID(storage: any Storage) async throws(BackupError) -> String {
        try await Engine.readRepositoryID(storage: storage)
    }

    /// Backs up `paths` (files or directories, absolute or relative to the working directory) into a
    /// new snapshot. Each path becomes an entry of the snapshot root named by its last component.
    ///
    /// The sequence yields progress and ends with ``BackupEvent/finished(_:)``; a failure ends it by
    /// throwing ``BackupError``. Cancelling the consuming task stops the backup: packs and index
    /// checkpoints already written stay and the next backup reuses them; no snapshot is written.
    /// Unreadable files do not stop the backup: they are reported and listed in the summary.
    /// - Throws (from the sequence): `.staleRepository` (older head than this device has seen),
    ///   `.invalidArgument` (missing source path, two paths with the same last component),
    ///   `.storage`, `.dataDamaged`, `.cancelled`.
    public func backup(paths: [String], options: BackupOptions = BackupOptions()) -> AsyncThrowingStream<BackupEvent, any Error> {
        engine.backupStream(repository: self, paths: paths, options: options)
    }

    /// Runs a backup to the end in the calling task, reporting progress to `progress` (the same
    /// events as the sequence, ``BackupEvent/finished(_:)`` last). Returns the summary (check
    /// `isPartial`). Cancelling the calling task stops the backup as the sequence's consumer does.
    /// Its blocking work (reading files, a folder's writes) runs on threads of its own, never on
    /// the cooperative pool.
    public func backup(paths: [String], options: BackupOptions = BackupOptions(),
                       progress: @escaping @Sendable (BackupEvent) -> Void = { _ in }) async throws(BackupError) -> BackupSummary {
        let cancel = CancelFlag()
        let engine = self.engine
        let result: Result<BackupSummary, BackupError> = await withTaskCancellationHandler {
            do throws(BackupError) {
                return .success(try await engine.backup(paths: paths, options: options, cancel: cancel, events: progress))
            } catch {
                return .failure(error)
            }
        } onCancel: {
            cancel.set()
        }
        return try result.get()
    }

    /// Every snapshot in the repository, oldest first. Each is verified (name hash, decryption).
    /// - Throws: `.dataDamaged` naming the first snapshot object that fails verification, `.storage`.
    public func snapshots() async throws(BackupError) -> [SnapshotInfo] {
        try await engine.snapshots()
    }

    /// Finds one snapshot by `latest`, a full id, or a unique id prefix (at least 4 hex digits).
    /// - Throws: `.snapshotNotFound` (none or ambiguous), `.dataDamaged`, `.storage`.
    public func snapshot(matching selector: String) async throws(BackupError) -> SnapshotInfo {
        try await engine.snapshot(matching: selector)
    }

    /// Lists a snapshot's entries below `path` (`nil` or `""` for the root): the entries of that
    /// directory, or all entries below it when `recursive`. A file path lists just that file.
    /// - Throws: `.snapshotNotFound`, `.pathNotFound`, `.dataDamaged`, `.dataMissing`, `.storage`.
    public func list(snapshot: String, path: String? = nil, recursive: Bool = false) async throws(BackupError) -> [NodeInfo] {
        try await engine.list(snapshot: snapshot, path: path, recursive: recursive)
    }

    /// Restores a snapshot (or the `include` subset) into `target`, creating it if missing.
    ///
    /// Every blob is verified; each file is written under a temporary name and renamed only once all
    /// of it verified, so a damaged object stops that file (reported by ``RestoreEvent/fileFailed(_:)``
    /// naming the object) and never leaves wrong content. Modes, mtimes and symlinks are restored.
    /// - Throws (from the sequence): `.targetNotEmpty` unless `overwrite`, `.staleRepository`,
    ///   `.snapshotNotFound`, `.pathNotFound`, `.fileSystem`, `.storage`; damage to a tree object
    ///   is reported as a failure of the files below it.
    public func restore(snapshot: String, target: URL, options: RestoreOptions = RestoreOptions()) -> AsyncThrowingStream<RestoreEvent, any Error> {
        engine.restoreStream(repository: self, snapshot: snapshot, target: target, options: options)
    }

    /// Runs a restore to the end. Returns the summary (check `isComplete`).
    public func restore(snapshot: String, target: URL, options: RestoreOptions = RestoreOptions()) async throws(BackupError) -> RestoreSummary {
        do {
            for try await event in restore(snapshot: snapshot, target: target, options: options) {
                if case .finished(let summary) = event { return summary }
            }
        } catch let error as BackupError {
            throw error
        } catch {
            throw BackupError(.cancelled, message: "the restore was interrupted: \(error)")
        }
        throw BackupError(.cancelled, message: "the restore ended early")
    }

    /// Checks the repository: every index, snapshot and tree object is read and verified, every
    /// blob a snapshot needs is located in the index, every indexed pack exists (and its header
    /// verifies); with `readData`, every blob of every pack is decrypted and its id verified.
    /// Problems are collected, never thrown: the report names every damaged or missing object.
    /// - Throws: only when the storage cannot be listed (`.storage`).
    /// `progress` hears each pack checked (read whole with `readData`), from the checking task.
    public func check(readData: Bool = false, progress: (@Sendable (WorkProgress) -> Void)? = nil) async throws(BackupError) -> CheckReport {
        try await engine.check(readData: readData, progress: progress)
    }

    /// Removes the snapshot objects that `policy` does not keep (data stays until ``prune(mode:)``):
    /// restic's semantics, per group of snapshots (host and paths by default); each writer's newest
    /// snapshot is always kept. `dryRun` only reports.
    /// - Throws: `.invalidArgument` for an empty policy, `.staleRepository`, `.storage`.
    public func forget(policy: ForgetPolicy, dryRun: Bool = false) async throws(BackupError) -> ForgetResult {
        try await engine.forget(policy: policy, dryRun: dryRun)
    }

    /// Removes the snapshots named by id (or a unique prefix of at least 4 hex digits).
    /// - Throws: `.snapshotNotFound`; `.invalidArgument` for a writer's newest snapshot (kept so that
    ///   a rollback stays detectable; nothing is removed then), `.staleRepository`, `.storage`.
    public func forget(snapshots ids: [String], dryRun: Bool = false) async throws(BackupError) -> ForgetResult {
        try await engine.forget(snapshots: ids, dryRun: dryRun)
    }

    /// Frees space no live snapshot needs. Every blob of every live snapshot is located first (any
    /// missing or damaged one stops the prune before anything changes); a new index is written
    /// before anything is deleted; deletion is two-phase unless `mode` is ``PruneMode/singleWriterNow``.
    /// - Throws: `.dataMissing` / `.dataDamaged` (nothing changed), `.staleRepository`, `.storage`.
    /// `progress` hears the steps (reading trees, repacking, deleting) with their counts, from the pruning task.
    public func prune(mode: PruneMode = .twoPhase(grace: PruneMode.defaultGrace),
                      progress: (@Sendable (WorkProgress) -> Void)? = nil) async throws(BackupError) -> PruneReport {
        try await engine.prune(mode: mode, progress: progress)
    }
}
