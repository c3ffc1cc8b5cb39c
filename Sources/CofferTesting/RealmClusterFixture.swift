import CofferRealm
import CofferVault
import Foundation

/// A vault of real realms serving on loopback in this process, for the body of
/// ``withRealmCluster(count:threshold:policy:minimumPasswordLength:directory:isolation:_:)``.
///
/// It gives what an app's code needs to reach the vault: the realms' URLs, the client configuration
/// file (`vault.json`, with a development tenant's signing key beside it) and a token provider that
/// mints tokens for any account. ``vaultClient(repairStore:)`` puts them together.
public struct TestRealmCluster: Sendable {
    /// The folder holding the realms (`realm-1` … `realm-n`), `vault.json` and the tenant's key.
    public let directory: URL
    /// `vault.json`: what `VaultConfiguration.load(from:)` reads, and what a separate process (the
    /// `coffer` command, an app under test) is given. It names the development tenant key beside it,
    /// so `DevelopmentTenant.forConfiguration(_:at:)` mints tokens from it.
    public let vaultConfigurationURL: URL
    /// The configuration written to ``vaultConfigurationURL``.
    public let vaultConfiguration: VaultConfiguration
    /// Each realm's base URL (`http://127.0.0.1:PORT`), realm 1 first.
    public let realmURLs: [String]
    /// Mints realm tokens for any account, signed with the development tenant's key (the realms pin
    /// its public key). In production the app's server is the token provider.
    public let tokens: DevelopmentTenant
    private let cluster: RealmCluster

    init(cluster: RealmCluster, configuration: VaultConfiguration, tokens: DevelopmentTenant) {
        self.cluster = cluster
        self.directory = cluster.layout.directory
        self.vaultConfigurationURL = cluster.layout.vaultConfigURL
        self.vaultConfiguration = configuration
        self.realmURLs = cluster.realms.map(\.url)
        self.tokens = tokens
    }

    /// `n`, the number of realms.
    public var count: Int { cluster.layout.count }
    /// `t`, the realms needed to recover a key.
    public var threshold: Int { cluster.layout.threshold }

    /// A vault client for this cluster: its configuration, ``tokens``, HTTP to the realms (30 s per
    /// request: generous, because a test machine running many suites at once can be slow, and a
    /// stopped realm refuses at once, so nothing waits for it). Give it the device home's repair
    /// store (`DeviceHome.vaultRepairs` in CofferKit) so a password change that some realms missed
    /// is kept and finished.
    public func vaultClient(repairStore: VaultRepairStore? = nil) throws -> VaultClient {
        VaultClient(configuration: try vaultConfiguration.validated(), tokens: tokens,
                    transport: HTTPRealmTransport(timeout: .seconds(30)), repairStore: repairStore)
    }

    /// Stops realm `number` (1...count) gracefully, to test what the app does when realms are down
    /// (with more than `count - threshold` down, nothing can be recovered). It stays down until
    /// the cluster stops.
    public func stopRealm(_ number: Int) async {
        precondition((1...count).contains(number), "realm \(number) is not in 1...\(count)")
        await cluster.realms[number - 1].stop()
    }

    /// Whether realm `number` is serving.
    public func isRunning(realm number: Int) -> Bool {
        cluster.realms[number - 1].isRunning
    }
}

/// The policy a ``withRealmCluster(count:threshold:policy:minimumPasswordLength:directory:isolation:_:)``
/// writes into `vault.json` unless told otherwise: the cheapest scrypt the client accepts
/// (N = 2^15) and 10 guesses, so a test's password work takes milliseconds instead of a second.
public let fastTestVaultPolicy: VaultPolicy = try! VaultPolicy(log2N: VaultPolicy.log2NRange.lowerBound, r: 8, p: 1, guessLimit: 10)

/// Runs `body` with `count` real realms (the `CofferRealm` server) serving on loopback in this
/// process, each on a free port with its own SQLite store, and a `vault.json` for them; stops every
/// realm and waits until it has stopped when `body` returns or throws, then (unless `directory` was
/// given) deletes their folder. Nothing outlives the call: no server, no task, no port.
///
/// ```swift
/// try await withRealmCluster { cluster in
///     let home = DeviceHome(appFolder)
///     let vault = VaultAccess(client: try cluster.vaultClient(repairStore: home.vaultRepairs), user: "alice")
///     let (backups, _) = try await Backups.create(storage: storage, home: home, vault: vault, password: "pw")
///     ...
/// }
/// ```
///
/// - Parameters:
///   - count: realms (`n`), 1...255.
///   - threshold: realms needed to recover (`t`, more than half of `count`); default the smallest
///     majority (3 of 5).
///   - policy: written into `vault.json` for new registrations; default ``fastTestVaultPolicy``.
///     Pass `VaultPolicy.default` to test with the production scrypt cost.
///   - minimumPasswordLength: the shortest new password the client accepts (default 1, so tests
///     may use short passwords; the production default is 6).
///   - directory: where the realms keep their state; kept after the call. Default: a new folder
///     under the temporary directory, deleted after the call.
public func withRealmCluster<Value>(
    count: Int = 5, threshold: Int? = nil, policy: VaultPolicy = fastTestVaultPolicy, minimumPasswordLength: Int = 1,
    directory: URL? = nil, isolation: isolated (any Actor)? = #isolation,
    _ body: (TestRealmCluster) async throws -> Value
) async throws -> Value {
    let root = directory
        ?? FileManager.default.temporaryDirectory.appendingPathComponent("coffer-realms-\(UUID().uuidString)", isDirectory: true)
    func removeTemporaryFolder() {
        if directory == nil { try? FileManager.default.removeItem(at: root) }
    }
    let layout = RealmClusterLayout(directory: root, count: count, threshold: threshold)
    let cluster: RealmCluster
    do {
        // Stops the realms it started if one cannot start.
        cluster = try await RealmCluster.start(layout: layout)
    } catch {
        removeTemporaryFolder()
        throw error
    }
    let result: Value
    do {
        var configuration = cluster.vaultConfiguration
        configuration.policy = .init(policy, minPasswordLength: minimumPasswordLength)
        _ = try configuration.validated()
        try (configuration.jsonData() + Data([10])).write(to: layout.vaultConfigURL, options: .atomic)
        let tokens = try await DevelopmentTenant.forConfiguration(configuration, at: layout.vaultConfigURL)
        result = try await body(TestRealmCluster(cluster: cluster, configuration: configuration, tokens: tokens))
    } catch {
        await cluster.stop()
        removeTemporaryFolder()
        throw error
    }
    await cluster.stop()
    removeTemporaryFolder()
    return result
}
