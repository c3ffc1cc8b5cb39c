import ArgumentParser
import CofferCore
import CofferRealm
import CofferVault
import Foundation
import Logging

/// Recovery latency against a local 5-realm cluster (loopback HTTP), p50/p99, with the cost of the
/// password stretching (scrypt at the registration's policy) measured on its own.
struct RealmBenchRecovery: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-recovery",
        abstract: "Benchmark: recovery latency with N loopback realms, p50/p99, KSF cost separately.",
        shouldDisplay: false)

    @Option(help: "Scratch folder for the cluster (created).") var dir: String
    @Option(help: "Realms.") var count: Int = 5
    @Option(help: "Recoveries to time.") var iterations: Int = 40
    @Option(help: "scrypt log2(N) of the registration's policy.") var log2N: UInt8 = 16
    @Option(help: "Put every realm in this PostgreSQL database, a schema each (postgres://USER@HOST:PORT/DB).") var store: String?

    func run() async throws {
        var log = Logger(label: "coffer.realm.bench")
        log.logLevel = .error
        // The benchmark times recoveries of one user back to back, far above the per-user limit a
        // realm applies by default: the limits are raised, so it measures the protocol, not them.
        let postgres = try store.map { try PostgresStoreURL(parsing: $0) }
        let layout = RealmClusterLayout(directory: URL(fileURLWithPath: dir), count: count, limits: RealmConfig.Limits.unlimitedForBenchmarks,
                                        postgres: postgres)
        let cluster = try await CofferRealm.RealmCluster.start(layout: layout, logger: log)
        defer { Task { await cluster.stop() } }
        let config = try cluster.vaultConfiguration.validated()
        let tenant = try await DevelopmentTenant.forConfiguration(cluster.vaultConfiguration, at: layout.vaultConfigURL)
        let client = VaultClient(configuration: config, tokens: tenant)
        let policy = try VaultPolicy(log2N: log2N)
        let key = BackupKey()
        let password = "correct horse battery staple"
        try await client.register(key: key, password: password, user: "bench", policy: policy, replace: .reset)  // a reused --dir may hold one

        // The KSF alone, same parameters.
        var ksf: [Double] = []
        for _ in 0..<max(5, iterations / 4) {
            let t0 = ContinuousClock.now
            _ = try VaultDerivation.stretch(password: password, salt: Array(repeating: 7, count: 32), policy: policy)
            ksf.append(Self.ms(ContinuousClock.now - t0))
        }
        var plain: [Double] = []
        var rotated: [Double] = []
        for i in 0..<iterations {
            let rotate = i % 2 == 1
            let t0 = ContinuousClock.now
            let r = try await client.recover(password: password, user: "bench", rotate: rotate)
            let d = Self.ms(ContinuousClock.now - t0)
            guard r.key.constantTimeEquals(key) else { throw RealmCommandError(description: "recovered a different key") }
            if rotate { rotated.append(d) } else { plain.append(d) }
        }
        func pct(_ xs: [Double], _ p: Double) -> String {
            let s = xs.sorted()
            return String(format: "%.1f", s[min(s.count - 1, Int((Double(s.count - 1) * p).rounded()))])
        }
        print("== recovery latency, \(count) loopback realms (\(postgres.map { "PostgreSQL \($0)" } ?? "SQLite")), threshold \(config.threshold), scrypt N=2^\(log2N) r=8 p=1 ==")
        print("KSF (scrypt) alone:              p50 \(pct(ksf, 0.5)) ms   p99 \(pct(ksf, 0.99)) ms   (\(ksf.count) runs)")
        print("recovery (Q0, Q1, Q2):           p50 \(pct(plain, 0.5)) ms   p99 \(pct(plain, 0.99)) ms   (\(plain.count) runs, one scrypt each)")
        print("recovery + rotation:             p50 \(pct(rotated, 0.5)) ms   p99 \(pct(rotated, 0.99)) ms   (\(rotated.count) runs, two scrypts each)")
        await cluster.stop()
    }

    static func ms(_ d: Duration) -> Double {
        Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15
    }
}
