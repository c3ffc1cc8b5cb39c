import CofferBackup
import CofferCore
import CofferVault
import Logging

/// What `coffer init --password` gathered before creating anything: the vault client, the account
/// and the new password (asked first, so that a typo or a missing vault.json stops `init` before the
/// repository exists).
struct PreparedVault {
    let client: VaultClient
    let user: String
    let password: String
    /// The vault.json path, remembered per repository (`VaultLink`) for the head anchoring.
    let configPath: String?
    /// Proof of the current password (from the recovery that checked it), for replacing the registration.
    var replaceCredential: VaultReplaceCredential? = nil

    static func prepare(_ options: VaultOptions) async throws -> PreparedVault {
        let user = try options.account()
        let client = try await options.client()
        let password = try readPassword(prompt: "Vault password for \(user) (protects the new key): ", confirm: true, options: options)
        return PreparedVault(client: client, user: user, password: password, configPath: options.configPath)
    }
}

/// `coffer init` calls ``keyCreated(_:repositoryID:location:vault:logger:)`` with every newly created
/// (or imported) key, right after the repository exists and the key is in the device key file, and
/// before the 64 digits are printed.
enum NewKeyHook {
    /// With `--password`, stores the key in the Backup Key Vault. A failure stops `init` with that
    /// error; the repository and the device key file stay, and `coffer vault enable --repo` retries.
    static func keyCreated(_ key: BackupKey, repositoryID: String, location: String, vault: PreparedVault?, logger: Logger) async throws {
        guard let vault else {
            logger.debug("repository \(repositoryID): key kept as 64 digits only (no --password)")
            return
        }
        let report = try await vault.client.register(key: key, password: vault.password, user: vault.user)
        printRegistration(report, client: vault.client,
                          what: "The Backup Key Vault now protects this key for \(vault.user): on a new device, `coffer vault recover` gets it back with the password.")
        if let path = vault.configPath { VaultLinks.save(DeviceKeyStore(), repositoryID: repositoryID, vault: path, user: vault.user) }
    }
}
