#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CofferCore
import CofferStorage

/// The repository's working state (keys, config, index) behind ``Repository``.
final class Engine: Sendable {
    static func notYet(_ what: String) -> BackupError {
        BackupError(.invalidArgument, message: "\(what) is not yet implemented")
    }

    static func initialize(storage: any Storage, key: BackupKey, options: RepositoryOptions,
                           deviceStore: DeviceKeyStore?) async throws(BackupError) -> Repository {
        throw notYet("initialize")
    }

    static func open(storage: any Storage, key: BackupKey, deviceStore: DeviceKeyStore?) async throws(BackupError) -> Repository {
        throw notYet("open")
    }

    static func readRepositoryID(storage: any Storage) async throws(BackupError) -> String {
        throw notYet("readRepositoryID")
    }

    func backupStream(repository: Repository, paths: [String], options: BackupOptions) -> AsyncThrowingStream<BackupEvent, any Error> {
        AsyncThrowingStream { $0.finish(throwing: Self.notYet("backup")) }
    }

    func snapshots() async throws(BackupError) -> [SnapshotInfo] { throw Self.notYet("snapshots") }
    func snapshot(matching selector: String) async throws(BackupError) -> SnapshotInfo { throw Self.notYet("snapshot") }
    func list(snapshot: String, path: String?, recursive: Bool) async throws(BackupError) -> [NodeInfo] { throw Self.notYet("list") }
    func restoreStream(repository: Repository, snapshot: String, target: URL, options: RestoreOptions) -> AsyncThrowingStream<RestoreEvent, any Error> {
        AsyncThrowingStream { $0.finish(throwing: Self.notYet("restore")) }
    }
    func check(readData: Bool) async throws(BackupError) -> CheckReport { throw Self.notYet("check") }
    func forget(policy: ForgetPolicy, dryRun: Bool) async throws(BackupError) -> ForgetResult { throw Self.notYet("forget") }
    func prune(mode: PruneMode) async throws(BackupError) -> PruneReport { throw Self.notYet("prune") }
}
