import CofferRealm
import CofferVault
import Foundation
import Testing

/// Failover without forgotten guesses: a realm on a PostgreSQL primary with a synchronous standby
/// (streaming replication, both started here with initdb and pg_basebackup on loopback); the primary
/// is killed during a guess flood, the standby promoted, the realm pointed at it: every guess the
/// realm acknowledged is still counted, and the right password still unlocks.
@Suite("Realm failover on PostgreSQL", .serialized)
struct RealmFailoverTests {
    // The flood outlives the primary's death only because the store bounds every operation (30 s):
    // queries in flight on the killed primary were otherwise never answered (PostgresRealmStore).
    @Test("kill the primary mid-flood, promote the synchronous standby: no acknowledged guess forgotten, recovery still works",
          .timeLimit(.minutes(3)))
    func failover() async throws {
        // synchronous_commit = on with a named synchronous standby: COMMIT returns once the standby flushed the WAL.
        let primary = try PostgresTestServer.makeInstance(name: "primary",
                                                          options: "-c synchronous_standby_names=standby1 -c synchronous_commit=on -c wal_level=replica")
        defer {
            primary.stop()
            try? FileManager.default.removeItem(at: primary.folder)
        }
        let bin = try PostgresTestServer.binDir()
        let standbyFolder = try PostgresTestServer.makeFolder("standby")
        defer { try? FileManager.default.removeItem(at: standbyFolder) }
        let standbyData = standbyFolder.appendingPathComponent("data")
        try PostgresTestServer.run(bin.appendingPathComponent("pg_basebackup"),
                                   ["-d", "host=127.0.0.1 port=\(primary.port) user=postgres application_name=standby1",
                                    "-D", standbyData.path, "-R", "-X", "stream", "--no-sync"], in: standbyFolder)
        let standby = PostgresTestServer.Instance(folder: standbyFolder, data: standbyData, port: PostgresTestServer.freePort())
        try standby.start()
        defer { standby.stop() }
        var sync = ""
        for _ in 0..<200 where sync != "sync" {
            sync = (try? primary.psql("SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby1'")) ?? ""
            if sync != "sync" { try await Task.sleep(for: .milliseconds(50)) }
        }
        try #require(sync == "sync", "the standby never became synchronous")
        

        let root = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-realm-failover-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let layout = RealmClusterLayout(directory: root, count: 1, limits: .unlimitedForBenchmarks, postgres: primary.url.withSchema("realm"))
        try layout.prepare()
        var config = try RealmConfig.load(from: layout.realmDirectory(1).configFile)
        config.guessLimit = 100
        try config.save(to: layout.realmDirectory(1).configFile)
        let cluster = try await RealmCluster.start(layout: layout)
        let handle = cluster.realms[0]
        try await stopping(cluster) {
            let tenant = try await DevelopmentTenant.forConfiguration(cluster.vaultConfiguration, at: layout.vaultConfigURL)
            let descriptor = cluster.vaultConfiguration.realms[0].descriptor
            let client = { RealmClient(url: handle.url, probe: try! RealmProbe(descriptor: descriptor), tenant: tenant, directory: handle.directory) }
            let reg = try await client().register("fred", guessLimit: 100)

            let acks = Mutex2(0), stop = Mutex2(false)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<8 {
                    let realm = client()
                    group.addTask {
                        while !stop.withLock({ $0 }) {
                            guard let a = try? await realm.guess("fred", version: reg.version) else { continue }
                            if case .q1 = a { acks.withLock { $0 += 1 } }
                        }
                    }
                }
                while acks.withLock({ $0 }) < 15 { try await Task.sleep(for: .milliseconds(5)) }
                try await Task.sleep(for: .milliseconds(Int.random(in: 10...80)))
                primary.stop()   // immediate: the primary is gone mid-flood
                stop.withLock { $0 = true }
                try await group.waitForAll()
            }
            let acknowledged = acks.withLock { $0 }

            // Promote the standby and point the realm at it.
            try PostgresTestServer.run(bin.appendingPathComponent("pg_ctl"), ["-D", standbyData.path, "-w", "promote"], in: standbyFolder)
            await handle.stop()
            config = try RealmConfig.load(from: handle.directory.configFile)
            config.store = standby.url.withSchema("realm_1").urlString()
            try config.save(to: handle.directory.configFile)
            try await handle.start()
            let realm = RealmClient(url: handle.url, probe: try RealmProbe(descriptor: descriptor), tenant: tenant, directory: handle.directory)
            let counted = 100 - (try await realm.attemptsLeft("fred"))
            print("failover: \(acknowledged) acknowledged on the primary, \(counted) counted on the promoted standby")
            #expect(counted >= acknowledged, "\(acknowledged) acknowledged, only \(counted) counted after failover")
            #expect(counted <= acknowledged + 8)
            // Recovery still works: the right proof unlocks and returns W.
            guard case .q1(let q1) = try await realm.guess("fred", version: reg.version) else { Issue.record("no guess after failover"); return }
            let answer = try await realm.unlock("fred", version: reg.version, challenge: q1.challenge,
                                                proof: realm.proof(tag: reg.tag, version: reg.version, challenge: q1.challenge))
            #expect(answer == .q2(Q2Answer(wrappedKey: reg.wrapped)))
            #expect(try await realm.attemptsLeft("fred") == 100)
        }
    }
}
