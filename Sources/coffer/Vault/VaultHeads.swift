import CofferBackup
import CofferCore
import CofferVault
import Foundation

/// Which vault (and account) protects a repository on this device: `$COFFER_HOME/vault/links/<id>.json`
/// (0600), written by `init --password`, `vault enable` and `vault recover` for a repository, so later
/// backups, restores and prunes anchor and check heads without flags. `COFFER_VAULT` + `COFFER_USER`
/// (or a link) configure it; `COFFER_VAULT_HEADS=off` turns the anchoring off for one run,
/// `COFFER_VAULT_TIMEOUT` bounds each realm call (seconds, default 10).
struct VaultLink: Codable, Equatable {
    var vault: String
    var user: String

    static func url(_ store: DeviceKeyStore, repositoryID: String) -> URL {
        store.home.appendingPathComponent("vault/links/\(repositoryID).json")
    }

    static func load(_ store: DeviceKeyStore, repositoryID: String) -> VaultLink? {
        guard let data = try? Data(contentsOf: url(store, repositoryID: repositoryID)) else { return nil }
        return try? JSONDecoder().decode(VaultLink.self, from: data)
    }

    /// Remembers the link (absolute vault path). Best effort: a failure only costs the automatic check.
    static func save(_ store: DeviceKeyStore, repositoryID: String, vault: String, user: String) {
        let link = VaultLink(vault: URL(fileURLWithPath: vault).standardizedFileURL.path, user: user)
        guard load(store, repositoryID: repositoryID) != link, let data = try? JSONEncoder().encode(link) else { return }
        try? DeviceKeyStore.writePrivateFile(data, to: url(store, repositoryID: repositoryID))
    }
}

/// The vault side of backup, restore and prune: read the anchored heads before (print the latest
/// backup, refuse a stale repository), store the new head after a backup.
struct HeadAnchor {
    let client: VaultClient
    let user: String
    let key: BackupKey
    /// Realms (hex ids) that this device's pending vault change has still not reached after the
    /// retry this run made (nil: nothing pending). `backup --json` reports it.
    var pendingRealms: [String]? = nil

    /// The anchor for `repo` when a vault is configured (environment or link file), else nil.
    /// A configured but unusable vault (missing vault.json, no token) is a warning, not a failure.
    static func forRepository(_ repo: Repository, access: RepositoryAccess) async -> HeadAnchor? {
        let env = access.environment
        if env["COFFER_VAULT_HEADS"] == "off" { return nil }
        var vault = env["COFFER_VAULT"].flatMap { $0.isEmpty ? nil : $0 }
        var user = env["COFFER_USER"].flatMap { $0.isEmpty ? nil : $0 }
        if vault == nil || user == nil, let link = VaultLink.load(access.deviceStore, repositoryID: repo.repositoryID) {
            vault = vault ?? link.vault
            user = user ?? link.user
        }
        guard let vault, let user else { return nil }
        do {
            let key = try await access.key(for: repo.storage)
            // COFFER_VAULT_TIMEOUT: seconds per realm (default 10), so a backup job bounds what a down realm costs it.
            let timeout = env["COFFER_VAULT_TIMEOUT"].flatMap(Int.init).map { String(max(1, $0)) } ?? "10"
            let client = try await VaultOptions.parse(["--vault", vault, "--user", user, "--timeout", timeout]).client()
            // Every backup, restore and prune first retries this device's pending vault change
            // (a change of password, disable or key rotation that some realms missed).
            let pending = await finishPendingChange(client, user: user)
            return HeadAnchor(client: client, user: user, key: key,
                              pendingRealms: pending.map { $0.realmsNotUpdated(in: client.configuration).map(\.hex) })
        } catch {
            Terminal.err("coffer: warning: the vault (\(vault)) is configured but cannot be used: \(ErrorReport.classify(error).message); "
                         + "backup heads are neither checked against it nor anchored in it this time\n")
            return nil
        }
    }

    /// `check` when a vault is configured for `repo`; returns the anchor for the store after a backup.
    @discardableResult
    static func checkIfConfigured(_ repo: Repository, access: RepositoryAccess, doing what: String, action: String) async throws -> HeadAnchor? {
        guard let anchor = await forRepository(repo, access: access) else { return nil }
        try await anchor.check(repo, doing: what, action: action)
        return anchor
    }

    /// Before a backup, restore or prune: the anchored heads of this repository are read, the latest
    /// backup is printed, the heads are adopted (and recorded on this device), and the repository is
    /// refused (`.staleRepository`, exit 14) when it shows an older head or hides a snapshot a head
    /// names. If this device's own newest snapshot is not anchored yet (an earlier store failed), it
    /// is stored now. An unreachable vault is a warning: the device's own heads still apply.
    /// `what` names the command in warnings ("the restore"), `action` the refused action in errors
    /// ("restore from this repository").
    func check(_ repo: Repository, doing what: String, action: String, latest: (String) -> Void = { Terminal.err($0 + "\n") }) async throws {
        let found: AnchoredHeads
        do { found = try await client.readHeads(key: key, user: user) } catch {
            Terminal.err("coffer: warning: cannot read the backup heads anchored in the vault (\(error)); "
                         + "\(what) goes ahead checked only against the heads this device has seen\n")
            return
        }
        let heads = found.heads(repositoryIDHex: repo.repositoryID)
        latest(Self.latestLine(heads))
        try repo.adoptHeads(heads.map {
            DeviceHead(repositoryID: $0.repositoryIDHex, writerID: $0.writerIDHex, seq: $0.seq, snapshotID: $0.snapshotIDHex)
        })
        let newest = try await repo.verifyHeads(doing: action)
        // Retry of a failed store: this device's newest snapshot, if the vault lacks it.
        guard let writer = try? repo.deviceStore?.writerID(),
              let mine = newest.first(where: { $0.writerID == writer }),
              !heads.contains(where: { $0.writerIDHex == writer && $0.seq >= mine.seq }) else { return }
        await storeHead(mine, repositoryID: repo.repositoryID)
    }

    /// After a backup: anchors this device's newest snapshot (the one just made). A failure is a
    /// warning (the backup itself is done) and is retried by the next run's ``check(_:doing:)``.
    func anchorNewest(in repo: Repository) async {
        guard let writer = try? repo.deviceStore?.writerID(), let all = try? await repo.snapshots(),
              let mine = all.filter({ $0.writerID == writer }).max(by: { $0.seq < $1.seq }) else { return }
        await storeHead(mine, repositoryID: repo.repositoryID)
    }

    /// After a key rotation: anchors every writer's newest snapshot of the new generation (their ids
    /// all changed with the key), so a device that recovers the new key checks the repository at once.
    func anchorEveryWriter(in repo: Repository) async {
        guard let all = try? await repo.snapshots() else { return }
        var newest: [String: SnapshotInfo] = [:]
        for s in all where (newest[s.writerID]?.seq ?? 0) < s.seq { newest[s.writerID] = s }
        for s in newest.values.sorted(by: { $0.writerID < $1.writerID }) { await storeHead(s, repositoryID: repo.repositoryID) }
    }

    func storeHead(_ info: SnapshotInfo, repositoryID: String) async {
        guard let head = AnchoredHead(repositoryIDHex: repositoryID, writerIDHex: info.writerID, seq: info.seq,
                                      snapshotIDHex: info.id, time: info.time) else { return }
        do {
            let report = try await client.storeHead(head, key: key, user: user)
            Terminal.err("coffer: backup head anchored in the vault (snapshot \(info.shortID), seq \(info.seq), "
                         + "\(report.acknowledged.count) of \(client.configuration.n) realms)\n")
        } catch {
            Terminal.err("coffer: warning: snapshot \(info.shortID) is saved, but its head could not be anchored in the vault: \(error)\n"
                         + "  The backup itself is complete. The next backup, restore or prune with the vault configured anchors it "
                         + "again; until then a new device cannot detect a storage rollback to before this snapshot.\n")
        }
    }

    /// `vault recover` without a repository to check: prints the latest anchored backup (of
    /// `repositoryID`, or of each repository found) and records those heads in the device's head store.
    func report(repositoryID: String?, store: DeviceKeyStore) async {
        let found: AnchoredHeads
        do { found = try await client.readHeads(key: key, user: user) } catch {
            printErr("warning: cannot read the backup heads anchored in the vault (\(error))")
            return
        }
        let repos = repositoryID.map { [$0] } ?? Array(Set(found.heads.map(\.repositoryIDHex))).sorted()
        if repos.isEmpty { sayResult(Self.latestLine([])) }
        for id in repos {
            let heads = found.heads(repositoryIDHex: id)
            sayResult(repositoryID == nil ? "repository \(id): " + Self.latestLine(heads) : Self.latestLine(heads))
            for h in heads {
                try? store.heads.record(DeviceHead(repositoryID: h.repositoryIDHex, writerID: h.writerIDHex, seq: h.seq, snapshotID: h.snapshotIDHex))
            }
        }
    }

    static func latestLine(_ heads: [AnchoredHead]) -> String {
        guard let latest = heads.max(by: { $0.time < $1.time }) else {
            return "latest backup: none anchored in the vault for this repository yet"
        }
        return "latest backup: \(format(latest.time)) (snapshot \(latest.snapshotIDHex.prefix(8)), seq \(latest.seq), anchored in the vault)"
    }

    static func format(_ date: Date) -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime]
        return f.string(from: date)
    }
}
