import CofferCore
import CofferRealm
import Crypto
import Foundation
import Hummingbird
import Logging
import ServiceLifecycle
import Testing
@testable import CofferVault

/// An HTTP server that answers every POST with 200 and bytes of its choosing (a forging middlebox).
final class ForgingServer: Sendable {
    let url: String
    let group: ServiceGroup
    let task: Task<Void, any Error>

    static func start(_ answer: @escaping @Sendable (String) -> [UInt8]) async throws -> ForgingServer {
        let router = Router()
        for type in VaultMessageType.allCases {
            router.post(RouterPath(type.path)) { _, _ -> Response in
                Response(status: .ok, body: ResponseBody(byteBuffer: ByteBuffer(bytes: answer(type.path))))
            }
        }
        let (stream, cont) = AsyncStream<Int>.makeStream()
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
                              onServerRunning: { channel in
                                  cont.yield(channel.localAddress?.port ?? 0)
                                  cont.finish()
                              })
        let group = ServiceGroup(configuration: .init(services: [app], logger: Logger(label: "forger")))
        let task = Task { try await group.run() }
        var port = 0
        for await p in stream { port = p }
        return ForgingServer(url: "http://127.0.0.1:\(port)", group: group, task: task)
    }

    private init(url: String, group: ServiceGroup, task: Task<Void, any Error>) {
        self.url = url
        self.group = group
        self.task = task
    }

    func stop() async {
        await group.triggerGracefulShutdown()
        _ = try? await task.value
    }
}

/// A 5-realm cluster on loopback (the realm helper's in-process `RealmCluster`), a development
/// tenant, and a client. Every request goes over HTTP, sealed.
final class FlowHarness: Sendable {
    let root: URL
    let cluster: RealmCluster
    let config: ValidatedVaultConfiguration
    let tenant: DevelopmentTenant
    let seen: Mutex2<[(VaultMessageType, [UInt8])]>
    /// Fast scrypt for tests (the minimum the client accepts).
    static let policy = try! VaultPolicy(log2N: 15, r: 8, p: 1, guessLimit: 10)

    /// The realms get fixed ports below the ephemeral range (`startOnFixedPorts`): tests stop
    /// realms and start them again on their ports.
    static func start() async throws -> FlowHarness {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-vault-flow-\(UUID().uuidString)")
        let layout = RealmClusterLayout(directory: root, count: 5)
        let seen = Mutex2<[(VaultMessageType, [UInt8])]>([])
        let observer: @Sendable (VaultMessageType, [UInt8]) -> Void = { type, body in seen.withLock { $0.append((type, body)) } }
        let cluster = try await startOnFixedPorts(layout, observer: observer)
        var raw = cluster.vaultConfiguration
        raw.policy = .init(policy, minPasswordLength: 1)  // the flow tests use short passwords; the default minimum (6) is tested in VaultPasswordPolicyTests
        let tenant = try await DevelopmentTenant.forConfiguration(raw, at: layout.vaultConfigURL)
        return FlowHarness(root: root, cluster: cluster, config: try raw.validated(), tenant: tenant, seen: seen)
    }

    private init(root: URL, cluster: RealmCluster, config: ValidatedVaultConfiguration, tenant: DevelopmentTenant,
                 seen: Mutex2<[(VaultMessageType, [UInt8])]>) {
        self.root = root
        self.cluster = cluster
        self.config = config
        self.tenant = tenant
        self.seen = seen
    }

    func client(transport: any RealmTransport = HTTPRealmTransport(timeout: .seconds(30))) -> VaultClient {
        VaultClient(configuration: config, tokens: tenant, transport: transport)
    }

    func stop() async {
        await cluster.stop()
        try? FileManager.default.removeItem(at: root)
    }
}

/// Models a malicious realm: alters the (properly sealed) answers of the realms it is given.
struct TamperingTransport: RealmTransport {
    let inner: any RealmTransport
    let targets: Set<RealmID>
    let tamper: @Sendable (VaultAnswer) -> VaultAnswer

    func call(_ request: VaultRequest, realm: PinnedRealm) async -> RealmReply {
        let reply = await inner.call(request, realm: realm)
        guard targets.contains(realm.id), case .success(let answer) = reply else { return reply }
        return .success(tamper(answer))
    }
}

func containsWindow(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
    guard !needle.isEmpty, haystack.count >= needle.count else { return false }
    for i in 0...(haystack.count - needle.count) where haystack[i] == needle[0] {
        if Array(haystack[i..<i + needle.count]) == needle { return true }
    }
    return false
}

@Suite("Vault flows over HTTP against 5 realms", .serialized)
struct VaultFlowTests {
    @Test("enable, recover (with rotation), change password (old fails), disable")
    func fullLifecycle() async throws {
        let h = try await FlowHarness.start()
        try await stopping(h) {
            let client = h.client()
            let key = BackupKey()

            let reg = try await client.register(key: key, password: "hunter2 hunter2", user: "alice")
            #expect(reg.acknowledged.count == 5 && reg.pending.isEmpty)
            var status = await client.status(user: "alice")
            #expect(status.activeVersion == reg.version && status.converged.count == 5 && status.attemptsLeft == 10)

            let recovered = try await client.recover(password: "hunter2 hunter2", user: "alice")
            #expect(recovered.key.constantTimeEquals(key))
            #expect(recovered.version == reg.version && recovered.faulty.isEmpty)
            let rotated = try #require(recovered.rotation)
            #expect(rotated.version != reg.version && rotated.acknowledged.count == 5)
            status = await client.status(user: "alice")
            #expect(status.activeVersion == rotated.version && status.converged.count == 5)

            try await client.changePassword(currentPassword: "hunter2 hunter2", newPassword: "correct horse", user: "alice")
            await #expect(throws: VaultError.wrongPassword(attemptsLeft: 9)) {
                _ = try await client.recover(password: "hunter2 hunter2", user: "alice")
            }
            let again = try await client.recover(password: "correct horse", user: "alice")
            #expect(again.key.constantTimeEquals(key))
            // A success resets the count, and the rotation starts a fresh record.
            #expect(await client.status(user: "alice").attemptsLeft == 10)

            let disabled = try await client.disable(user: "alice")
            #expect(disabled.cleared.count == 5)
            await #expect(throws: VaultError.notRegistered) { _ = try await client.recover(password: "correct horse", user: "alice") }
            status = await client.status(user: "alice")
            #expect(status.activeVersion == nil && status.realms.allSatisfy { $0.state == .notRegistered })
            // Another user is unaffected by all this.
            await #expect(throws: VaultError.notRegistered) { _ = try await client.recover(password: "x", user: "bob") }
        }
    }

    @Test("each wrong password costs one guess; after L the key is gone, even with the right password")
    func guessLimit() async throws {
        let h = try await FlowHarness.start()
        try await stopping(h) {
            let client = h.client()
            try await client.register(key: BackupKey(), password: "right", user: "carol")
            for expected in stride(from: 9, through: 1, by: -1) {
                await #expect(throws: VaultError.wrongPassword(attemptsLeft: expected)) {
                    _ = try await client.recover(password: "wrong", user: "carol")
                }
            }
            await #expect(throws: VaultError.locked) { _ = try await client.recover(password: "wrong", user: "carol") }
            await #expect(throws: VaultError.locked) { _ = try await client.recover(password: "right", user: "carol") }
            let status = await client.status(user: "carol")
            #expect(status.realms.allSatisfy { if case .locked = $0.state { return true } else { return false } })
            // The device that still has K can enable again over the tombstones.
            let key = BackupKey()
            try await client.register(key: key, password: "fresh", user: "carol")
            #expect(try await client.recover(password: "fresh", user: "carol").key.constantTimeEquals(key))
        }
    }

    @Test("2 realms down: recovery works and rotation repairs nothing it cannot reach; 3 down: named")
    func availability() async throws {
        let h = try await FlowHarness.start()
        try await stopping(h) {
            var client = h.client(transport: HTTPRealmTransport(timeout: .seconds(30)))
            // The stale realms hold a version this device made two registrations ago: replacing it
            // needs the proof the device kept with its pending change (issue 11, problem 8).
            client.repairStore = VaultRepairStore(home: h.root.appendingPathComponent("device"))
            let key = BackupKey()
            let reg = try await client.register(key: key, password: "pw", user: "dave")
            await h.cluster.realms[0].stop()
            await h.cluster.realms[3].stop()
            let recovered = try await client.recover(password: "pw", user: "dave")
            #expect(recovered.key.constantTimeEquals(key))
            #expect(Set(recovered.down.map(\.realmID)) == [h.config.realms[0].id, h.config.realms[3].id])
            // A stopped realm refuses the connection: named as such, not waited for until the timeout.
            #expect(recovered.down.allSatisfy { $0.reason.contains("refused the connection") }, "\(recovered.down)")
            let rotation = try #require(recovered.rotation)
            #expect(rotation.acknowledged.count == 3 && rotation.pending.count == 2)

            await h.cluster.realms[4].stop()
            do {
                _ = try await client.recover(password: "pw", user: "dave")
                Issue.record("recovery with 2 of 5 realms succeeded")
            } catch let error as VaultError {
                guard error.code == .realmsUnavailable else { Issue.record("got \(error)"); return }
                let down = error.unreachable, needed = error.needed
                #expect(needed == 1)
                #expect(Set(down.map(\.realmID)) == Set([0, 3, 4].map { h.config.realms[$0].id }))
                #expect(error.description.contains(h.config.realms[4].id.hex))
            }
            // Bring them back: the stale realms (old version) are outvoted, and the next recovery's
            // rotation repairs them.
            for i in [0, 3, 4] { try await restart(h.cluster.realms[i]) }
            let status = await client.status(user: "dave")
            #expect(status.activeVersion == rotation.version)
            #expect(Set(status.stale) == [h.config.realms[0].id, h.config.realms[3].id])
            #expect(status.realms.first { $0.realmID == h.config.realms[0].id }?.state == .active(version: reg.version, attemptsLeft: 10))
            let repaired = try await client.recover(password: "pw", user: "dave")
            #expect(repaired.rotation?.acknowledged.count == 5)
            #expect(await client.status(user: "dave").converged.count == 5)
        }
    }

    @Test("a registration that missed realms is kept on the device (0600) and repaired; a later one supersedes it")
    func repairAfterPartialRegistration() async throws {
        let h = try await FlowHarness.start()
        try await stopping(h) {
            let home = h.root.appendingPathComponent("device")
            var client = h.client(transport: HTTPRealmTransport(timeout: .seconds(30)))
            client.repairStore = VaultRepairStore(home: home)
            let key = BackupKey()
            await h.cluster.realms[1].stop()
            await h.cluster.realms[2].stop()
            let reg = try await client.register(key: key, password: "pw", user: "hank")
            #expect(reg.acknowledged.count == 3 && reg.pending.count == 2)
            let file = client.repairStore!.url(tenant: h.config.tenant, user: "hank")
            let mode = try FileManager.default.attributesOfItem(atPath: file.path)[.posixPermissions] as? Int
            #expect(mode == 0o600)
            // Still down: nothing to do yet, the repair stays.
            #expect(try await client.repair(user: "hank") == .stillPending(repaired: 0, remaining: 2))
            #expect(FileManager.default.fileExists(atPath: file.path))
            try await restart(h.cluster.realms[1])
            try await restart(h.cluster.realms[2])
            #expect(await client.status(user: "hank").stale.count == 2)
            #expect(try await client.repair(user: "hank") == .completed(repaired: 2))
            #expect(!FileManager.default.fileExists(atPath: file.path))
            let status = await client.status(user: "hank")
            #expect(status.converged.count == 5 && status.activeVersion == reg.version)
            #expect(try await client.recover(password: "pw", user: "hank", rotate: false).key.constantTimeEquals(key))

            // A pending repair never overwrites a later registration made elsewhere.
            await h.cluster.realms[0].stop()
            // (This device made the registration: its report proves it for the replacement.)
            let partial = try await client.register(key: key, password: "pw2", user: "hank", replace: .proof(try #require(reg.replaceCredential)))
            #expect(partial.pending.count == 1)
            try await restart(h.cluster.realms[0])
            let otherDevice = h.client()
            let newer = try await otherDevice.changePassword(currentPassword: "pw2", newPassword: "pw3", user: "hank")
            #expect(try await client.repair(user: "hank") == .superseded)
            #expect(await client.status(user: "hank").activeVersion == newer.version)
            #expect(try await client.repair(user: "hank") == .nothingPending)
        }
    }

    @Test("a realm returning corrupted evaluations or an altered share is named; recovery still works")
    func lyingRealms() async throws {
        let h = try await FlowHarness.start()
        try await stopping(h) {
            let key = BackupKey()
            try await h.client().register(key: key, password: "pw", user: "erin")
            let liar = h.config.realms[1].id
            let corruptEvaluation = TamperingTransport(inner: HTTPRealmTransport(timeout: .seconds(30)), targets: [liar]) { answer in
                guard case .q1(var a) = answer else { return answer }
                a.evaluatedElement = try! VaultOPRF.evaluate(blindedElement: a.evaluatedElement, key: VaultOPRF.generateKey()).evaluatedElement
                return .q1(a)
            }
            let r1 = try await h.client(transport: corruptEvaluation).recover(password: "pw", user: "erin")
            #expect(r1.key.constantTimeEquals(key))
            #expect(r1.faulty.map(\.realmID) == [liar])
            #expect(r1.faulty.first?.reason.contains("proof") == true)

            let alteredShare = TamperingTransport(inner: HTTPRealmTransport(timeout: .seconds(30)), targets: [liar]) { answer in
                guard case .q1(var a) = answer else { return answer }
                a.maskedShare[0] ^= 1
                return .q1(a)
            }
            let r2 = try await h.client(transport: alteredShare).recover(password: "pw", user: "erin")
            #expect(r2.key.constantTimeEquals(key) && r2.faulty.map(\.realmID) == [liar])

            // Three liars: no t valid answers: a realm fault naming them, never a wrong key.
            let three = Set(h.config.realms.prefix(3).map(\.id))
            let many = TamperingTransport(inner: HTTPRealmTransport(timeout: .seconds(30)), targets: three) { answer in
                guard case .q1(var a) = answer else { return answer }
                a.signature[5] ^= 1
                return .q1(a)
            }
            do {
                _ = try await h.client(transport: many).recover(password: "pw", user: "erin")
                Issue.record("recovered with 3 lying realms")
            } catch let error as VaultError {
                guard error.code == .realmFault else { Issue.record("got \(error)"); return }
                let faulty = error.realms
                #expect(Set(faulty.map(\.realmID)) == three)
            }
            // A realm lying in Q0 about the record (another version) is outvoted.
            let q0Liar = TamperingTransport(inner: HTTPRealmTransport(timeout: .seconds(30)), targets: [liar]) { answer in
                guard case .q0(var a) = answer else { return answer }
                a.version = .random()
                return .q0(a)
            }
            #expect(try await h.client(transport: q0Liar).recover(password: "pw", user: "erin").key.constantTimeEquals(key))
        }
    }

    @Test("an unsealed or forged answer is a transport failure, never locked or not registered")
    func forgedAnswers() async throws {
        let h = try await FlowHarness.start()
        try await stopping(h) {
            let key = BackupKey()
            try await h.client().register(key: key, password: "pw", user: "frank")
            // A machine in the path answers 200 with a plaintext "locked" (or random bytes): it has no
            // context to seal for, so the client must see a transport failure.
            let lockedPlain = try VaultAnswer.error(RealmErrorAnswer(code: .locked)).encode(for: .q0)
            let forger = try await ForgingServer.start { _ in lockedPlain }
            let random = try await ForgingServer.start { _ in Challenge.random().bytes + [UInt8](repeating: 7, count: 528) }
            try await stopping(random) { try await stopping(forger) {
                func config(_ forged: [Int: String]) throws -> ValidatedVaultConfiguration {
                    var raw = h.cluster.vaultConfiguration
                    raw.policy = .init(FlowHarness.policy)
                    for (i, url) in forged { raw.realms[i].url = url }
                    return try raw.validated()
                }
                let two = VaultClient(configuration: try config([0: forger.url, 1: random.url]), tokens: h.tenant,
                                      transport: HTTPRealmTransport(timeout: .seconds(30)))
                let r = try await two.recover(password: "pw", user: "frank", rotate: false)
                #expect(r.key.constantTimeEquals(key))
                #expect(r.down.count == 2 && r.down.allSatisfy { $0.reason.contains("not sealed") })
                let three = VaultClient(configuration: try config([0: forger.url, 1: forger.url, 2: random.url]), tokens: h.tenant,
                                        transport: HTTPRealmTransport(timeout: .seconds(30)))
                do {
                    _ = try await three.recover(password: "pw", user: "frank")
                    Issue.record("recovered through 3 forged realms")
                } catch let error as VaultError {
                    guard error.code == .realmsUnavailable else { Issue.record("forgery read as \(error)"); return }
                    let down = error.unreachable, needed = error.needed
                    #expect(needed == 1 && down.count == 3)
                }
                // Status does not call a forged realm locked either.
                let status = await three.status(user: "frank")
                #expect(status.down.count == 3 && status.activeVersion == nil)
            } }
        }
    }

    @Test("no realm ever sees the password, the scrypt output, S or K")
    func realmsSeeNoSecrets() async throws {
        let h = try await FlowHarness.start()
        try await stopping(h) {
            let secrets = Mutex2<[[UInt8]]>([])
            var client = h.client()
            client.secretObserver = { s in secrets.withLock { $0.append(s.withUnsafeBytes { Array($0) }) } }
            let key = BackupKey()
            let password = "a rather long password that would show"
            try await client.register(key: key, password: password, user: "gina")
            _ = try await client.recover(password: password, user: "gina")
            await #expect(throws: VaultError.self) { _ = try await client.recover(password: password + "!", user: "gina") }
            try await client.changePassword(currentPassword: password, newPassword: password + "2", user: "gina")

            let bodies = h.seen.withLock { $0 }
            #expect(bodies.count > 30)
            // Every version the realms saw, and the scrypt output for it.
            var versions = Set<RecordVersion>()
            for (type, body) in bodies {
                switch try VaultRequest.decode(body, type: type) {
                case .r2(let m): versions.insert(m.version)
                case .q1(let m): versions.insert(m.version)
                default: break
                }
            }
            var forbidden: [[UInt8]] = [Array(password.utf8), key.withUnsafeBytes { Array($0) }]
            forbidden += secrets.withLock { $0 }
            #expect(secrets.withLock { $0.count } >= 3)
            for v in versions {
                let salt = VaultDerivation.salt(version: v, tenant: Array(h.config.tenant.utf8), user: Array("gina".utf8))
                for p in [password, password + "!", password + "2"] {
                    forbidden.append(try VaultDerivation.stretch(password: p, salt: salt, policy: FlowHarness.policy).withUnsafeBytes { Array($0) })
                }
            }
            for (_, body) in bodies {
                for f in forbidden { #expect(!containsWindow(body, f)) }
                // Nor any 16-byte piece of them.
                for f in forbidden where f.count >= 32 { #expect(!containsWindow(body, Array(f[8..<24]))) }
            }
        }
    }
}
