#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CofferBackup
import CofferCore
import CofferVault

/// This device's Coffer folder and everything in it, in one place: the key files (`keys/`), the
/// backup heads this device has seen (`heads`), the vault's pending changes (`vault/`) and which
/// vault protects which repository (`vault/links/<repository id>.json`). Files with secrets are
/// 0600 in 0700 folders, written atomically and durably (`PrivateFile`).
///
/// An app gives its own folder (Application Support on Apple platforms); the `coffer` command uses
/// `$COFFER_HOME`, else `~/.config/coffer` (``standard``).
public struct DeviceHome: Sendable, Equatable {
    public let url: URL

    public init(_ url: URL) {
        self.url = url
    }

    /// `$COFFER_HOME` when set, else `~/.config/coffer`: the `coffer` command's home.
    public static var standard: DeviceHome { DeviceHome(DeviceKeyStore().home) }

    /// The key files and the record of seen heads (`DeviceKeyStore`).
    public var keys: DeviceKeyStore { DeviceKeyStore(home: url) }

    /// Where the vault client keeps a change that not every realm has yet.
    public var vaultRepairs: VaultRepairStore { VaultRepairStore(home: url) }

    /// The file that says which vault protects `repositoryID`.
    public func vaultLinkURL(repositoryID: String) -> URL {
        url.appendingPathComponent("vault/links/\(repositoryID).json")
    }

    /// Which vault (configuration file) and account protect `repositoryID`, if recorded.
    public func vaultLink(repositoryID: String) -> VaultLink? {
        guard let data = try? Data(contentsOf: vaultLinkURL(repositoryID: repositoryID)) else { return nil }
        return try? JSONDecoder().decode(VaultLink.self, from: data)
    }

    /// Records the link (0600). Best effort by design: without it only the automatic head check of
    /// later runs is lost, which the caller can still configure; returns whether it was written.
    @discardableResult
    public func saveVaultLink(_ link: VaultLink, repositoryID: String) -> Bool {
        guard vaultLink(repositoryID: repositoryID) != link, let data = try? JSONEncoder().encode(link) else { return true }
        do {
            try PrivateFile.save(data, to: vaultLinkURL(repositoryID: repositoryID))
            return true
        } catch {
            return false
        }
    }
}

/// Which vault protects a repository on this device: the vault configuration file and the account.
public struct VaultLink: Codable, Equatable, Sendable {
    /// The vault configuration file (`vault.json`), an absolute path.
    public var vault: String
    /// The account (the tokens' subject).
    public var user: String

    public init(vault: String, user: String) {
        self.vault = URL(fileURLWithPath: vault).standardizedFileURL.path
        self.user = user
    }
}
