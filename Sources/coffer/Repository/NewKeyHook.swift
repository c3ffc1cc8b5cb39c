import CofferCore
import Logging

/// **Hook point for `coffer init --password`.** `coffer init` calls ``keyCreated(_:repositoryID:location:logger:)``
/// with every newly created (or imported) key, right after the repository exists and the key is in
/// the device key file, and before the 64 digits are printed.
///
/// The coordinator wires the vault here (store the key behind a password in the Backup Key Vault);
/// the CLI itself does not implement the vault. Throwing stops `init` with that error (the
/// repository and the device key file stay: the user still gets the 64 digits next time with
/// `coffer key show`).
enum NewKeyHook {
    static func keyCreated(_ key: BackupKey, repositoryID: String, location: String, logger: Logger) async throws {
        logger.debug("no key protection configured for repository \(repositoryID) (vault not wired)")
    }
}
