import CofferBackup
import CofferKit
import CofferCore
import CofferVault
import Foundation

/// Which vault (and account) protects a repository on this device: `DeviceHome.vaultLink` (CofferKit),
/// `$COFFER_HOME/vault/links/<id>.json` (0600), written by `init --password`, `vault enable` and
/// `vault recover` for a repository, so later backups, restores and prunes anchor and check heads
/// without flags. `COFFER_VAULT` + `COFFER_USER` (or a link) configure it; `COFFER_VAULT_HEADS=off`
/// turns the anchoring off for one run, `COFFER_VAULT_TIMEOUT` bounds each realm call (seconds,
/// default 10).
enum VaultLinks {
    static func load(_ store: DeviceKeyStore, repositoryID: String) -> VaultLink? {
        DeviceHome(store.home).vaultLink(repositoryID: repositoryID)
    }

    /// Remembers the link (absolute vault path). Best effort: a failure only costs the automatic check.
    static func save(_ store: DeviceKeyStore, repositoryID: String, vault: String, user: String) {
        DeviceHome(store.home).saveVaultLink(VaultLink(vault: vault, user: user), repositoryID: repositoryID)
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
        if vault == nil || user == nil, let link = VaultLinks.load(access.deviceStore, repositoryID: repo.repositoryID) {
            vault = vault ?? link.vault
            user = user ?? link.user
        }
        guard let vault, let user else { return nil }
        do {
            let key = try await access.key(for: repo.storage)
            // COFFER_VAULT_TIMEOUT: seconds per realm (default 10), so a backup job bounds what a down realm costs it.
            let timeout = VaultOptions.timeout(env)
            let client = try await VaultOptions.client(configPath: vault, tokenCommand: env["COFFER_VAULT_TOKEN_COMMAND"], timeout: timeout)
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
        let result = try await guardian.check(repo, action: action) { heads in latest(Self.latestLine(heads)) }
        if let error = result.unreadable {
            Terminal.err("coffer: warning: cannot read the backup heads anchored in the vault (\(error)); "
                         + "\(what) goes ahead checked only against the heads this device has seen\n")
        }
        if let outcome = result.reanchored { Self.say(outcome) }
    }

    /// The library's side of it (CofferKit): reading, adopting, verifying and storing heads.
    var guardian: HeadGuard { HeadGuard(vault: client, user: user, key: key) }

    /// After a backup: anchors this device's newest snapshot (the one just made). A failure is a
    /// warning (the backup itself is done) and is retried by the next run's ``check(_:doing:)``.
    func anchorNewest(in repo: Repository) async {
        if let outcome = await guardian.anchorNewest(in: repo) { Self.say(outcome) }
    }

    /// After a key rotation: anchors every writer's newest snapshot of the new generation (their ids
    /// all changed with the key), so a device that recovers the new key checks the repository at once.
    func anchorEveryWriter(in repo: Repository) async {
        for outcome in await guardian.anchorEveryWriter(in: repo) { Self.say(outcome) }
    }

    static func say(_ outcome: HeadStoreOutcome) {
        switch outcome {
        case .anchored(let info, let acknowledged, let n):
            Terminal.err("coffer: backup head anchored in the vault (snapshot \(info.shortID), seq \(info.seq), "
                         + "\(acknowledged) of \(n) realms)\n")
        case .failed(let info, let error):
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
