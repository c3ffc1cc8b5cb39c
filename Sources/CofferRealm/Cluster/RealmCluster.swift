import CofferVault
import Crypto
import Foundation
import Hummingbird
import JWTKit
import Logging
import ServiceLifecycle
import Synchronization

/// A local development vault: `count` realms under one folder, a development tenant whose ES256
/// signing key sits beside the client configuration `vault.json`, all served on loopback.
///
/// Layout: `D/realm-1 … D/realm-n` (one realm folder each), `D/tenant-dev-key.pem` (0600),
/// `D/vault.json` (written once every realm listens).
public struct RealmClusterLayout: Sendable {
    public var directory: URL
    public var count: Int
    public var threshold: Int
    /// Request limits written into every realm's `realm.json` by `prepare` (nil: leave them as
    /// they are; new realms get the defaults). Benchmarks and flood tests raise them.
    public var limits: RealmConfig.Limits?
    /// All realms in this PostgreSQL database, one schema each (`realm_1` … or `SCHEMA_1` … when the
    /// URL names a schema), written into every realm's `realm.json` by `prepare`; nil: each realm's
    /// SQLite file (or whatever its realm.json already says).
    public var postgres: PostgresStoreURL?

    /// `threshold` defaults to the smallest majority (3 of 5).
    public init(directory: URL, count: Int = 5, threshold: Int? = nil, limits: RealmConfig.Limits? = nil,
                postgres: PostgresStoreURL? = nil) {
        self.directory = directory
        self.count = count
        self.threshold = threshold ?? (count / 2 + 1)
        self.limits = limits
        self.postgres = postgres
    }

    /// Realm `i`'s store URL in the cluster's PostgreSQL database (its own schema), as realm.json holds it.
    public func postgresStore(_ i: Int) -> String? {
        guard let postgres else { return nil }
        return postgres.withSchema(postgres.schema.map { "\($0)_\(i)" } ?? "realm_\(i)").urlString()
    }

    public func realmDirectory(_ i: Int) -> RealmDirectory { RealmDirectory(directory.appendingPathComponent("realm-\(i)")) }
    public var vaultConfigURL: URL { directory.appendingPathComponent("vault.json") }
    public var tenantKeyURL: URL { directory.appendingPathComponent(VaultConfiguration.developmentTenantKeyFileName) }
    static let tenantKeyID = "dev-1"

    /// Creates whatever is missing: the tenant key, each realm (x = its number, the tenant pinned).
    /// Existing realms are kept (their records survive restarts); the tenant is added to any that lack it.
    /// Returns a line per action taken.
    @discardableResult
    public func prepare() throws -> [String] {
        guard count >= 1, count <= 255 else { throw RealmFileError(path: directory.path, message: "--count must be 1...255") }
        guard threshold >= 1, threshold <= count, 2 * threshold > count else {
            throw RealmFileError(path: directory.path, message: "--threshold \(threshold) must be more than half of \(count) and at most \(count)")
        }
        if let postgres, postgres.password != nil {
            throw RealmFileError(path: directory.path, message: "--store: give the PostgreSQL password in PGPASSWORD, not in the URL (it would be written into every realm.json)")
        }
        var did: [String] = []
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let publicPEM: String
        if FileManager.default.fileExists(atPath: tenantKeyURL.path) {
            let pem = String(decoding: try AtomicFile.readSecret(tenantKeyURL), as: UTF8.self)
            guard let key = try? ES256PrivateKey(pem: pem) else {
                throw RealmFileError(path: tenantKeyURL.path, message: "\(tenantKeyURL.path) is not an ES256 private key")
            }
            publicPEM = key.publicKey.pemRepresentation
        } else {
            let (priv, pub) = DevelopmentTenant.generateKeyPEM()
            try AtomicFile.write(Array(priv.utf8), to: tenantKeyURL, mode: 0o600)
            publicPEM = pub
            did.append("created the development tenant '\(VaultConfiguration.developmentTenantName)' and its ES256 signing key \(tenantKeyURL.path) (0600)")
        }
        let tenant = RealmConfig.Tenant(id: VaultConfiguration.developmentTenantName,
                                        keys: [.init(kid: Self.tenantKeyID, alg: "ES256", publicKeyPEM: publicPEM)])
        for i in 1...count {
            let dir = realmDirectory(i)
            if dir.exists {
                var config = try RealmConfig.load(from: dir.configFile)
                if let idx = config.tenants.firstIndex(where: { $0.id == tenant.id }) {
                    if config.tenants[idx] != tenant {
                        config.tenants[idx] = tenant
                        try config.save(to: dir.configFile)
                        did.append("updated the development tenant's key in \(dir.configFile.path)")
                    }
                } else {
                    config.tenants.append(tenant)
                    try config.save(to: dir.configFile)
                    did.append("pinned the development tenant in \(dir.configFile.path)")
                }
            } else {
                let (keys, _) = try dir.initialize(x: UInt8(i), tenants: [tenant])
                did.append("initialised realm \(i) (id \(keys.realmIDHex), x = \(i)) in \(dir.url.path)")
            }
            if let store = postgresStore(i) {
                var config = try RealmConfig.load(from: dir.configFile)
                if config.store != store {
                    config.store = store
                    try config.validate(path: dir.configFile.path)
                    try config.save(to: dir.configFile)
                    did.append("realm \(i) keeps its state in \(store)")
                }
            }
            if let limits {
                var config = try RealmConfig.load(from: dir.configFile)
                if config.limits != limits {
                    config.limits = limits
                    try config.validate(path: dir.configFile.path)
                    try config.save(to: dir.configFile)
                }
            }
        }
        return did
    }

    /// Writes `vault.json` for realms listening at `urls` (index i-1 for realm i).
    public func writeVaultConfiguration(urls: [String]) throws -> VaultConfiguration {
        var realms: [VaultRealm] = []
        for i in 1...count {
            let (keys, config) = try realmDirectory(i).load()
            realms.append(VaultRealm(descriptor: keys.descriptor(url: urls[i - 1]), x: config.x))
        }
        let vault = VaultConfiguration(tenant: VaultConfiguration.developmentTenantName, threshold: threshold, realms: realms,
                                       developmentTenantKey: VaultConfiguration.developmentTenantKeyFileName)
        _ = try vault.validated()
        try AtomicFile.write(Array(try vault.jsonData()) + [10], to: vaultConfigURL, mode: 0o644)
        return vault
    }
}

/// One realm served in this process, stoppable and restartable on the same port (tests use this to
/// take realms down).
public final class RealmHandle: Sendable {
    public let number: Int
    public let directory: RealmDirectory
    let host: String
    let logger: Logger
    let observer: RealmRequestObserver?
    private struct State {
        var port: Int
        /// nil: no admin listener.
        var adminPort: Int?
        var group: ServiceGroup?
        var task: Task<Void, any Error>?
        var service: RealmService?
    }
    private let state: Mutex<State>

    init(number: Int, directory: RealmDirectory, host: String, port: Int, adminPort: Int? = nil, logger: Logger,
         observer: RealmRequestObserver?) {
        self.number = number
        self.directory = directory
        self.host = host
        self.logger = logger
        self.observer = observer
        self.state = Mutex(State(port: port, adminPort: adminPort))
    }

    /// The bound port (after `start`).
    public var port: Int { state.withLock { $0.port } }
    public var url: String { "http://\(host):\(port)" }
    /// The admin listener's bound port (`/health`, `/metrics`), if the realm has one.
    public var adminPort: Int? { state.withLock { $0.adminPort } }
    public var adminURL: String? { adminPort.map { "http://\(host):\($0)" } }
    public var isRunning: Bool { state.withLock { $0.task != nil } }
    /// The running service (its store and metrics), if started.
    public var service: RealmService? { state.withLock { $0.service } }

    /// Starts serving; returns once the realm listens.
    public func start() async throws {
        guard !isRunning else { return }
        let service = try await RealmService(directory: directory, logger: logger, observer: observer)
        let (stream, cont) = AsyncStream<Int>.makeStream()
        let app = RealmServer.application(service: service, host: host, port: port, logger: logger) { p in
            cont.yield(p)
            cont.finish()
        }
        var services: [any Service] = [app]
        let (adminStream, adminCont) = AsyncStream<Int>.makeStream()
        let adminPort = self.adminPort
        if let adminPort {
            services.append(RealmServer.adminApplication(service: service, host: host, port: adminPort, logger: logger) { p in
                adminCont.yield(p)
                adminCont.finish()
            })
        } else {
            adminCont.finish()
        }
        let group = ServiceGroup(configuration: .init(services: services, logger: logger))
        // If a server never comes up (port taken), ending the group ends the waits below.
        let task = Task {
            defer {
                cont.finish()
                adminCont.finish()
            }
            try await group.run()
        }
        state.withLock {
            $0.group = group
            $0.task = task
            $0.service = service
        }
        var bound: Int?
        for await p in stream { bound = p }
        var adminBound: Int?
        for await p in adminStream { adminBound = p }
        guard let bound, adminPort == nil || adminBound != nil else {
            await group.triggerGracefulShutdown()
            state.withLock { $0 = State(port: $0.port, adminPort: $0.adminPort) }
            _ = await task.result
            await service.close()
            var reason = ""
            if case .failure(let error) = await task.result { reason = ": \(error)" }
            // A failed admin listener ends the group too, possibly before the public one reported.
            let which = bound == nil
                ? "\(host):\(port)" + (adminPort.map { $0 == 0 ? "" : " (or its admin port \($0))" } ?? "")
                : "\(host):\(adminPort ?? 0) (admin)"
            throw RealmFileError(path: directory.url.path, message: "realm \(number) could not listen on \(which)\(reason)")
        }
        state.withLock {
            $0.port = bound
            if adminBound != nil { $0.adminPort = adminBound }
        }
    }

    /// Graceful stop: in-flight requests finish, the database closes.
    public func stop() async {
        let (group, task, service) = state.withLock { s -> (ServiceGroup?, Task<Void, any Error>?, RealmService?) in
            defer {
                s.group = nil
                s.task = nil
                s.service = nil
            }
            return (s.group, s.task, s.service)
        }
        await group?.triggerGracefulShutdown()
        _ = try? await task?.value
        await service?.close()
    }
}

/// A development cluster running in this process (`coffer realm cluster`, tests, the demo).
public final class RealmCluster: Sendable {
    public let layout: RealmClusterLayout
    public let realms: [RealmHandle]
    /// The client configuration written to `vault.json`.
    public let vaultConfiguration: VaultConfiguration
    /// What `prepare` did (for the CLI to print).
    public let actions: [String]

    private init(layout: RealmClusterLayout, realms: [RealmHandle], vault: VaultConfiguration, actions: [String]) {
        self.layout = layout
        self.realms = realms
        self.vaultConfiguration = vault
        self.actions = actions
    }

    /// Prepares the folder and starts every realm on `host` (ports `basePort + i - 1`, or free ports
    /// when `basePort` is nil), then writes `vault.json`.
    /// - Parameters:
    ///   - adminBasePort: each realm's admin listener (`/health`, `/metrics`) on `host`, port
    ///     `adminBasePort + i - 1`; 0: free ports; nil (the default): no admin listeners.
    ///   - observer: test hook, sees every decrypted request body at every realm.
    public static func start(layout: RealmClusterLayout, host: String = "127.0.0.1", basePort: Int? = nil,
                             adminBasePort: Int? = nil,
                             logger: Logger? = nil, observer: RealmRequestObserver? = nil) async throws -> RealmCluster {
        let actions = try layout.prepare()
        var log = logger ?? Logger(label: "coffer.realm")
        if logger == nil { log.logLevel = .warning }
        var handles: [RealmHandle] = []
        for i in 1...layout.count {
            handles.append(RealmHandle(number: i, directory: layout.realmDirectory(i), host: host,
                                       port: basePort.map { $0 + i - 1 } ?? 0,
                                       adminPort: adminBasePort.map { $0 == 0 ? 0 : $0 + i - 1 }, logger: log, observer: observer))
        }
        do {
            for h in handles { try await h.start() }
        } catch {
            for h in handles { await h.stop() }
            throw error
        }
        let vault = try layout.writeVaultConfiguration(urls: handles.map(\.url))
        return RealmCluster(layout: layout, realms: handles, vault: vault, actions: actions)
    }

    /// Stops every realm gracefully.
    public func stop() async {
        for r in realms { await r.stop() }
    }

    /// Serves until SIGINT or SIGTERM, then stops gracefully.
    public func runUntilSignalled(logger: Logger) async throws {
        try await waitForSignal(logger: logger)
        await stop()
    }
}

/// Waits for SIGINT or SIGTERM via swift-service-lifecycle (a service that idles until shutdown).
func waitForSignal(logger: Logger) async throws {
    struct Idle: Service {
        func run() async throws {
            try? await gracefulShutdown()
        }
    }
    let group = ServiceGroup(configuration: .init(services: [Idle()], gracefulShutdownSignals: [.sigint, .sigterm], logger: logger))
    try await group.run()
}
