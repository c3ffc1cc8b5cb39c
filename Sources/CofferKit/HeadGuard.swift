#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CofferBackup
import CofferCore
import CofferVault

/// The vault side of backup, restore, forget and prune: before, the heads anchored in the vault
/// are read, adopted and checked (a repository that shows an older head, or hides a snapshot a
/// head names, is refused with `BackupError.Code.staleRepository`); after a backup, the new head is
/// anchored. This is what protects a new device from a storage provider that rolls the repository
/// back (docs/VAULT.md, "Anchored backup heads").
public struct HeadGuard: Sendable {
    public let vault: VaultClient
    public let user: String
    /// The repository's backup key: heads are sealed under keys derived from it.
    let key: BackupKey

    public init(vault: VaultClient, user: String, key: BackupKey) {
        self.vault = vault
        self.user = user
        self.key = key
    }

    /// What ``check(_:action:headsRead:)`` found.
    public struct Check: Sendable {
        /// The heads anchored for this repository, newest first (empty: none yet, or unreadable).
        public var heads: [AnchoredHead]
        /// Why the heads could not be read (too few realms): the check then relied on this
        /// device's own heads only. `nil` when they were read.
        public var unreadable: VaultError?
        /// This device's newest snapshot, anchored now because an earlier store had failed.
        public var reanchored: HeadStoreOutcome?

        /// The most recent backup the vault knows of.
        public var latest: AnchoredHead? { heads.max(by: { $0.time < $1.time }) }
    }

    /// Reads the anchored heads of `repo`, adopts them (recorded in the device's head store, checked
    /// by every later operation of `repo`) and verifies the repository against them.
    /// - Parameters:
    ///   - action: the refused action in the error ("restore from this repository").
    ///   - headsRead: called with the heads before the verification (a UI shows the latest backup
    ///     even when the repository is then refused).
    /// - Throws: `BackupError` `.staleRepository` (nothing was changed), or another `BackupError`.
    ///   Unreadable heads are not an error: see ``Check/unreadable``.
    public func check(_ repo: Repository, action: String,
                      headsRead: ([AnchoredHead]) -> Void = { _ in }) async throws(BackupError) -> Check {
        let found: AnchoredHeads
        do {
            found = try await vault.readHeads(key: key, user: user)
        } catch {
            return Check(heads: [], unreadable: error, reanchored: nil)
        }
        let heads = found.heads(repositoryIDHex: repo.repositoryID)
        headsRead(heads)
        try repo.adoptHeads(heads.map {
            DeviceHead(repositoryID: $0.repositoryIDHex, writerID: $0.writerIDHex, seq: $0.seq, snapshotID: $0.snapshotIDHex)
        })
        let newest = try await repo.verifyHeads(doing: action)
        var check = Check(heads: heads, unreadable: nil, reanchored: nil)
        // An earlier store failed: anchor this device's newest snapshot now.
        if let writer = try? repo.deviceStore?.writerID(),
           let mine = newest.first(where: { $0.writerID == writer }),
           !heads.contains(where: { $0.writerIDHex == writer && $0.seq >= mine.seq }) {
            check.reanchored = await store(mine, repositoryID: repo.repositoryID)
        }
        return check
    }

    /// After a backup: anchors this device's newest snapshot (the one just made). `nil` when this
    /// device has no snapshot in `repo`.
    public func anchorNewest(in repo: Repository) async -> HeadStoreOutcome? {
        guard let writer = try? repo.deviceStore?.writerID(), let all = try? await repo.snapshots(),
              let mine = all.filter({ $0.writerID == writer }).max(by: { $0.seq < $1.seq }) else { return nil }
        return await store(mine, repositoryID: repo.repositoryID)
    }

    /// After a key rotation: anchors every writer's newest snapshot of the new generation (their ids
    /// all changed with the key), so a device that recovers the new key can check the repository.
    public func anchorEveryWriter(in repo: Repository) async -> [HeadStoreOutcome] {
        await anchorNewest(ofWriters: nil, in: repo)
    }

    /// After a copy: anchors the newest snapshot of each writer that made one of `snapshotIDs`
    /// (the copied chains).
    public func anchorWriters(of snapshotIDs: Set<String>, in repo: Repository) async -> [HeadStoreOutcome] {
        guard let all = try? await repo.snapshots() else { return [] }
        return await anchorNewest(ofWriters: Set(all.filter { snapshotIDs.contains($0.id) }.map(\.writerID)), in: repo)
    }

    /// The newest snapshot of each writer in `writers` (all when nil), anchored in writer order.
    private func anchorNewest(ofWriters writers: Set<String>?, in repo: Repository) async -> [HeadStoreOutcome] {
        guard let all = try? await repo.snapshots() else { return [] }
        var newest: [String: SnapshotInfo] = [:]
        for s in all where writers?.contains(s.writerID) ?? true && (newest[s.writerID]?.seq ?? 0) < s.seq {
            newest[s.writerID] = s
        }
        var out: [HeadStoreOutcome] = []
        for s in newest.values.sorted(by: { $0.writerID < $1.writerID }) {
            if let o = await store(s, repositoryID: repo.repositoryID) { out.append(o) }
        }
        return out
    }

    /// Anchors one snapshot's head. A failure is an outcome, not an error: the backup itself is
    /// complete, and the next ``check(_:action:headsRead:)`` anchors it again.
    public func store(_ info: SnapshotInfo, repositoryID: String) async -> HeadStoreOutcome? {
        guard let head = AnchoredHead(repositoryIDHex: repositoryID, writerIDHex: info.writerID, seq: info.seq,
                                      snapshotIDHex: info.id, time: info.time) else { return nil }
        do {
            let report = try await vault.storeHead(head, key: key, user: user)
            return .anchored(info, acknowledged: report.acknowledged.count, of: vault.configuration.n)
        } catch {
            return .failed(info, error)
        }
    }
}

/// Whether a snapshot's head reached the vault.
public enum HeadStoreOutcome: Sendable {
    /// Stored; `acknowledged` of `of` realms have it (at least `n - t + 1`).
    case anchored(SnapshotInfo, acknowledged: Int, of: Int)
    /// Not stored (too few realms): the snapshot is saved, but a new device cannot detect a
    /// rollback to before it until a later run anchors it.
    case failed(SnapshotInfo, VaultError)
}
