import AsyncHTTPClient
import CofferCore
import CofferRealm
import Foundation
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
import Testing
@testable import CofferVault

/// A loopback HTTP proxy in front of one realm: forwards every request and answer, except that it
/// drops the answers of the first `answers` requests of one type (Q2 unless told) after the realm
/// processed them (the client sees a 502, as when a connection breaks on the way back). Counts what
/// it forwarded.
final class DroppingProxy: Sendable {
    let url: String
    let group: ServiceGroup
    let task: Task<Void, any Error>
    let counts: Mutex2<[String: Int]>

    static func start(target: String, dropping dropType: VaultMessageType, answers dropCount: Int) async throws -> DroppingProxy {
        let counts = Mutex2<[String: Int]>([:])
        let router = Router()
        for type in VaultMessageType.allCases {
            let path = type.path
            router.post(RouterPath(path)) { request, _ -> Response in
                let body = try await request.body.collect(upTo: 1 << 20)
                var forward = HTTPClientRequest(url: target + path)
                forward.method = .POST
                forward.headers.add(name: "Content-Type", value: "application/octet-stream")
                forward.body = .bytes(body)
                let response = try await HTTPClient.shared.execute(forward, timeout: .seconds(60))
                let answer = try await response.body.collect(upTo: 1 << 20)
                let drop = counts.withLock { c -> Bool in
                    c[path, default: 0] += 1
                    guard type == dropType, c["dropped", default: 0] < dropCount else { return false }
                    c["dropped", default: 0] += 1
                    return true
                }
                if drop { return Response(status: .badGateway) }
                return Response(status: .init(code: Int(response.status.code)), body: ResponseBody(byteBuffer: answer))
            }
        }
        let (stream, cont) = AsyncStream<Int>.makeStream()
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
                              onServerRunning: { channel in
                                  cont.yield(channel.localAddress?.port ?? 0)
                                  cont.finish()
                              })
        let group = ServiceGroup(configuration: .init(services: [app], logger: Logger(label: "dropping-proxy")))
        let task = Task { try await group.run() }
        var port = 0
        for await p in stream { port = p }
        return DroppingProxy(url: "http://127.0.0.1:\(port)", group: group, task: task, counts: counts)
    }

    private init(url: String, group: ServiceGroup, task: Task<Void, any Error>, counts: Mutex2<[String: Int]>) {
        self.url = url
        self.group = group
        self.task = task
        self.counts = counts
    }

    func count(_ key: String) -> Int { counts.withLock { $0[key, default: 0] } }

    /// One proxy in front of each of the harness's five realms, each dropping the first answer of
    /// `type`, and the vault configuration that points at the proxies (any password length).
    static func inFrontOf(_ h: FlowHarness, dropping type: VaultMessageType) async throws -> ([DroppingProxy], ValidatedVaultConfiguration) {
        var raw = h.cluster.vaultConfiguration
        raw.policy = .init(FlowHarness.policy, minPasswordLength: 1)
        var proxies = [DroppingProxy]()
        for i in 0..<5 {
            let p = try await DroppingProxy.start(target: h.config.realms[i].baseURL, dropping: type, answers: 1)
            proxies.append(p)
            raw.realms[i].url = p.url
        }
        return (proxies, try raw.validated())
    }

    func stop() async {
        await group.triggerGracefulShutdown()
        _ = try? await task.value
    }
}

@Suite("Vault: a lost Q2 answer is resent, not paid for with a new guess (issue 11, problem 4)", .serialized)
struct VaultLostQ2Tests {
    @Test("every realm's first Q2 answer is dropped: the client resends the same Q2 and recovers; one guess counted per realm")
    func lostQ2AnswersAreResent() async throws {
        let h = try await FlowHarness.start()
        try await stopping(h) {
            let key = BackupKey()
            try await h.client(transport: HTTPRealmTransport(timeout: .seconds(30))).register(key: key, password: "pw", user: "oli")
            let (proxies, configuration) = try await DroppingProxy.inFrontOf(h, dropping: .q2)
            try await stopping(all: proxies) {
                let client = VaultClient(configuration: configuration, tokens: h.tenant, transport: HTTPRealmTransport(timeout: .seconds(30)))
                let result = try await client.recover(password: "pw", user: "oli", rotate: false)
                #expect(result.key.constantTimeEquals(key))
                let q1 = VaultMessageType.q1.path, q2 = VaultMessageType.q2.path
                #expect(proxies.map { $0.count("dropped") } == [1, 1, 1, 1, 1])
                #expect(proxies.map { $0.count(q2) } == [2, 2, 2, 2, 2], "each Q2 resent once")
                #expect(proxies.map { $0.count(q1) } == [1, 1, 1, 1, 1], "one guess per realm, no second attempt")
                // Every realm unlocked (count reset), nothing more was spent.
                let status = await h.client(transport: HTTPRealmTransport(timeout: .seconds(30))).status(user: "oli")
                #expect(status.realms.allSatisfy { $0.state == .active(version: result.version, attemptsLeft: 10) })
            }
        }
    }
}

@Suite("Vault: a lost Q1 answer is resent, not paid for with a second guess", .serialized)
struct VaultLostQ1Tests {
    @Test("every realm's first Q1 answer is dropped after it counted the guess: the client resends the same Q1 and gets the stored answers; one guess counted per realm")
    func lostQ1AnswersAreResent() async throws {
        let h = try await FlowHarness.start()
        try await stopping(h) {
            let key = BackupKey()
            try await h.client(transport: HTTPRealmTransport(timeout: .seconds(30))).register(key: key, password: "pw", user: "uma")
            let (proxies, configuration) = try await DroppingProxy.inFrontOf(h, dropping: .q1)
            try await stopping(all: proxies) {
                let client = VaultClient(configuration: configuration, tokens: h.tenant, transport: HTTPRealmTransport(timeout: .seconds(30)))
                // A wrong password: nothing resets the counts, so they show what was spent. Without
                // the resend every realm's answer is lost (the realms unavailable, a guess spent at each).
                await #expect(throws: VaultError.wrongPassword(attemptsLeft: 9)) {
                    _ = try await client.recover(password: "wrong", user: "uma", rotate: false)
                }
                let q1 = VaultMessageType.q1.path
                #expect(proxies.map { $0.count("dropped") } == [1, 1, 1, 1, 1])
                #expect(proxies.map { $0.count(q1) } == [2, 2, 2, 2, 2], "each Q1 resent once")
                let status = await h.client(transport: HTTPRealmTransport(timeout: .seconds(30))).status(user: "uma")
                #expect(status.realms.count == 5)
                for realm in status.realms {
                    guard case .active(_, let attemptsLeft) = realm.state else { Issue.record("\(realm)"); continue }
                    #expect(attemptsLeft == 9, "the resent Q1 was counted again: \(realm)")
                }
                // And the right password recovers through the same proxies (their drops are used up).
                let result = try await client.recover(password: "pw", user: "uma", rotate: false)
                #expect(result.key.constantTimeEquals(key))
            }
        }
    }
}

extension DroppingProxy: StoppableTestService {}
