import CofferCore
import CofferRealm
import CofferVault
import Foundation

/// The demo's view of the vault client: the development tenant of the in-process cluster mints the
/// tokens, and the two outcomes the demo narrates are plain error types.
struct DemoVault {
    struct WrongPassword: Error, CustomStringConvertible {
        var attemptsLeft: Int
        var description: String { "wrong password, \(attemptsLeft) guesses left" }
    }
    struct Locked: Error, CustomStringConvertible {
        var description: String { "locked: too many wrong guesses, the key was destroyed" }
    }

    let client: VaultClient

    init(cluster: RealmCluster) async throws {
        let config = try cluster.vaultConfiguration.validated()
        let tenant = try await DevelopmentTenant.forConfiguration(cluster.vaultConfiguration, at: cluster.layout.vaultConfigURL)
        client = VaultClient(configuration: config, tokens: tenant)
    }

    func register(key: BackupKey, password: String, user: String) async throws {
        try await client.register(key: key, password: password, user: user)
    }

    func recover(password: String, user: String) async throws -> BackupKey {
        do {
            return try await client.recover(password: password, user: user).key
        } catch {
            if error.code == .wrongPassword, let left = error.attemptsLeft, left > 0 { throw WrongPassword(attemptsLeft: left) }
            if error.code == .wrongPassword || error.code == .locked { throw Locked() }
            throw error
        }
    }
}
