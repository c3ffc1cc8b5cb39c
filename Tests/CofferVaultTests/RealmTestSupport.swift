import CofferRealm
import CofferVault
import Crypto
import Foundation
import GRDB
import Testing
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Everything realm tests share: a temporary cluster of real realms on loopback, a development
/// tenant that mints tokens, and a raw HTTP client that sends exactly the sealed bytes a test wants.
final class RealmTestCluster: Sendable {
    let root: URL
    let cluster: RealmCluster
    let tenant: DevelopmentTenant
    let requests: RequestRecorder

    static func start(count: Int = 1, guessLimit: Int? = nil, limits: RealmConfig.Limits? = nil) async throws -> RealmTestCluster {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-realm-test-\(UUID().uuidString)")
        let layout = RealmClusterLayout(directory: root, count: count, limits: limits)
        if let guessLimit {
            // Prepare first so the realms exist, then raise the maximum guess limit.
            try layout.prepare()
            for i in 1...count {
                var config = try RealmConfig.load(from: layout.realmDirectory(i).configFile)
                config.guessLimit = guessLimit
                try config.save(to: layout.realmDirectory(i).configFile)
            }
        }
        let recorder = RequestRecorder()
        // Admin listeners (/health, /metrics) on free ports, apart from the public ones.
        // Fixed ports below the ephemeral range: tests stop realms and start them again on them.
        let cluster = try await startOnFixedPorts(layout, admin: true,
                                                  observer: { type, body in recorder.record(type, body) })
        let tenant = try await DevelopmentTenant.forConfiguration(cluster.vaultConfiguration, at: layout.vaultConfigURL)
        return RealmTestCluster(root: root, cluster: cluster, tenant: tenant, recorder: recorder)
    }

    private init(root: URL, cluster: RealmCluster, tenant: DevelopmentTenant, recorder: RequestRecorder) {
        self.root = root
        self.cluster = cluster
        self.tenant = tenant
        self.requests = recorder
    }

    func stop() async {
        await cluster.stop()
        try? FileManager.default.removeItem(at: root)
    }

    func realm(_ i: Int = 1) -> RealmClient {
        let r = cluster.vaultConfiguration.realms[i - 1]
        return RealmClient(url: r.url, probe: try! RealmProbe(descriptor: r.descriptor), tenant: tenant,
                           directory: cluster.realms[i - 1].directory, adminURL: cluster.realms[i - 1].adminURL)
    }
}

/// Collects decrypted request bodies (the realm-side test hook).
final class RequestRecorder: Sendable {
    private let bodies = Mutex2<[(VaultMessageType, [UInt8])]>([])
    func record(_ type: VaultMessageType, _ body: [UInt8]) { bodies.withLock { $0.append((type, body)) } }
    var all: [(VaultMessageType, [UInt8])] { bodies.withLock { $0 } }
}

/// A tiny lock (Synchronization.Mutex is not Copyable-friendly in stored closures here).
final class Mutex2<T>: @unchecked Sendable {
    private var value: T
    private let lock = NSLock()
    init(_ v: T) { value = v }
    func withLock<R>(_ body: (inout T) throws -> R) rethrows -> R {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}

/// Raw protocol access to one realm over HTTP.
struct RealmClient: Sendable {
    let url: String
    let probe: RealmProbe
    let tenant: DevelopmentTenant
    let directory: RealmDirectory
    /// The realm's admin listener (`/health`, `/metrics`), if it has one.
    var adminURL: String? = nil

    var realmID: RealmID { probe.realmID }

    static let session: URLSession = {
        let c = URLSessionConfiguration.ephemeral
        c.httpMaximumConnectionsPerHost = 64
        c.timeoutIntervalForRequest = 60
        return URLSession(configuration: c)
    }()

    /// POSTs raw bytes; returns the HTTP status and body.
    func post(_ path: String, _ bytes: [UInt8]) async throws -> (Int, [UInt8]) {
        var req = URLRequest(url: URL(string: url + path)!)
        req.httpMethod = "POST"
        req.httpBody = Data(bytes)
        let (data, response) = try await Self.session.data(for: req)
        return ((response as! HTTPURLResponse).statusCode, Array(data))
    }

    func get(_ path: String) async throws -> (Int, String) {
        try await Self.get(url + path)
    }

    /// GET on the admin listener.
    func getAdmin(_ path: String) async throws -> (Int, String) {
        try await Self.get(try #require(adminURL, "this realm has no admin listener") + path)
    }

    static func get(_ url: String) async throws -> (Int, String) {
        let (data, response) = try await session.data(from: URL(string: url)!)
        return ((response as! HTTPURLResponse).statusCode, String(decoding: data, as: UTF8.self))
    }

    /// Seals, POSTs and opens one request.
    func send(_ request: VaultRequest) async throws -> VaultAnswer {
        let (bytes, opener) = try probe.seal(request)
        return try await sendSealed(bytes, opener: opener, type: request.type)
    }

    func sendSealed(_ bytes: [UInt8], opener: ResponseOpener, type: VaultMessageType) async throws -> VaultAnswer {
        let (status, body) = try await post(type.path, bytes)
        try #require(status == 200, "HTTP \(status)")
        return try probe.open(body, opener: opener, type: type)
    }

    func token(_ user: String, _ scope: VaultScope) async throws -> String {
        try await tenant.token(user: user, realmID: realmID, scope: scope)
    }

    func q0(_ user: String, scope: VaultScope = .recover) async throws -> Q0Answer {
        let a = try await send(.q0(Q0Request(token: try await token(user, scope))))
        guard case .q0(let q) = a else { throw TestFailure("Q0 answered \(a)") }
        return q
    }

    /// A registration with random fields except the unlock tag and wrapped key the test chooses.
    struct Registration {
        var version: RecordVersion
        var tag: [UInt8]
        var wrapped: [UInt8]
        var maskedShare: [UInt8]
        var r2: R2Request
    }

    /// `replacing`: the active registration this one replaces (its unlock tag makes the replace proof).
    func register(_ user: String, guessLimit: UInt8 = 10, expected: RecordVersion? = nil, replacing: Registration? = nil) async throws -> Registration {
        let token = try await token(user, .register)
        let current = try await q0(user, scope: .register)
        let blinded = try VaultOPRF.blind(Array("pw".utf8))
        let a1 = try await send(.r1(R1Request(token: token, blindedElement: blinded.blindedElementBytes)))
        guard case .r1(let r1) = a1 else { throw TestFailure("R1 answered \(a1)") }
        let version = RecordVersion.random()
        let tag = rnd(32), wrapped = rnd(60), share = rnd(32)
        let expectedVersion = expected ?? current.version
        let proof = replacing.map {
            VaultDerivation.replaceProof(tag: $0.tag, realmID: realmID, currentVersion: expectedVersion, newVersion: version, pendingID: r1.pendingID)
        } ?? [UInt8](repeating: 0, count: WireSize.replaceProof)
        let r2 = R2Request(token: token, pendingID: r1.pendingID, expectedVersion: expectedVersion, version: version,
                           maskedShare: share, commitment: rnd(32), verificationKey: rnd(32), signature: rnd(64),
                           unlockTag: tag, wrappedKey: wrapped, policy: try VaultPolicy(log2N: 15, guessLimit: guessLimit),
                           replaceProof: proof)
        let a2 = try await send(.r2(r2))
        guard case .r2(let done) = a2, done.version == version else { throw TestFailure("R2 answered \(a2)") }
        return Registration(version: version, tag: tag, wrapped: wrapped, maskedShare: share, r2: r2)
    }

    /// Q0 then Q1 with a fresh blinded element: the Q1 answer (or error).
    func guess(_ user: String, version: RecordVersion) async throws -> VaultAnswer {
        let q = try await q0(user)
        let blinded = try VaultOPRF.blind(rnd(32))
        return try await send(.q1(Q1Request(token: try await token(user, .recover), ticket: q.ticket, version: version,
                                            blindedElement: blinded.blindedElementBytes)))
    }

    func proof(tag: [UInt8], version: RecordVersion, challenge: Challenge) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: Array("coffer-vault/v1/unlock-proof".utf8) + realmID.bytes + version.bytes + challenge.bytes,
                                              using: SymmetricKey(data: tag)))
    }

    func unlock(_ user: String, version: RecordVersion, challenge: Challenge, proof: [UInt8]) async throws -> VaultAnswer {
        try await send(.q2(Q2Request(token: try await token(user, .recover), version: version, challenge: challenge, unlockProof: proof)))
    }

    /// A complete wrong-password round at this realm: Q0, Q1, Q2 with a random proof.
    func wrongRound(_ user: String, version: RecordVersion) async throws -> VaultAnswer {
        let a = try await guess(user, version: version)
        guard case .q1(let q1) = a else { return a }
        return try await unlock(user, version: version, challenge: q1.challenge, proof: rnd(32))
    }

    func attemptsLeft(_ user: String) async throws -> Int {
        let q = try await q0(user, scope: .status)
        return Int(q.attemptsLeft)
    }

    /// The record row as stored: (gen, sealed bytes), found by the record key the realm derives.
    func storedRow(_ user: String) throws -> (gen: Int64, sealed: Data)? {
        let keys = try RealmKeys.load(from: directory.keyFile)
        let rk = RealmTestCluster.recordKey(keys: keys, tenant: tenant.tenant, user: user)
        let db = try DatabaseQueue(path: directory.databaseFile.path, configuration: { var c = Configuration(); c.readonly = true; return c }())
        return try db.read { db in
            try Row.fetchOne(db, sql: "SELECT gen, sealed FROM record WHERE id = ?", arguments: [rk]).map { ($0["gen"], $0["sealed"]) }
        }
    }
}

extension RealmTestCluster {
    /// The design's record key, computed independently of the realm's code.
    static func recordKey(keys: RealmKeys, tenant: String, user: String) -> Data {
        let k = HKDF<SHA256>.deriveKey(inputKeyMaterial: keys.storageKey, salt: [UInt8](), info: Array("coffer-vault/v1/record-id".utf8), outputByteCount: 32)
        func lp(_ s: String) -> [UInt8] { let b = Array(s.utf8); return [UInt8(b.count >> 8), UInt8(b.count & 0xff)] + b }
        return Data(HMAC<SHA256>.authenticationCode(for: lp(tenant) + lp(user), using: k))
    }

    /// Opens a stored record with the design's seal (key from storageKey and record key, AAD = record key ‖ gen).
    static func openRecord(keys: RealmKeys, recordKey rk: Data, gen: Int64, sealed: Data) throws -> [UInt8] {
        let k = HKDF<SHA256>.deriveKey(inputKeyMaterial: keys.storageKey, salt: [UInt8](),
                                       info: Array("coffer-vault/v1/record-seal".utf8) + Array(rk), outputByteCount: 32)
        let aad = rk + withUnsafeBytes(of: gen.bigEndian) { Data($0) }
        return Array(try AES.GCM.open(try AES.GCM.SealedBox(combined: sealed), using: k, authenticating: aad))
    }
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

func rnd(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8.random(in: 0...255) } }

extension Data {
    func contains(bytes needle: [UInt8]) -> Bool {
        guard !needle.isEmpty, count >= needle.count else { return false }
        return range(of: Data(needle)) != nil
    }
}

/// A server or cluster a test starts and must stop, whatever happens in the test.
protocol StoppableTestService: Sendable {
    func stop() async
}

extension RealmTestCluster: StoppableTestService {}
extension RealmCluster: StoppableTestService {}
extension FlowHarness: StoppableTestService {}
extension ForgingServer: StoppableTestService {}

/// ``stopping(_:_:)`` for several services, stopped in order.
func stopping(all services: [some StoppableTestService], _ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch {
        for s in services { await s.stop() }
        throw error
    }
    for s in services { await s.stop() }
}

/// Runs `body`, then stops `service` and waits until it has stopped, also when `body` throws:
/// the scoped teardown that a `defer { Task { await service.stop() } }` only pretended to be
/// (that Task outlives the test, so servers piled up and ports were reused under load).
func stopping(_ service: some StoppableTestService, _ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch {
        await service.stop()
        throw error
    }
    await service.stop()
}

/// Starts a cluster whose realms a test stops and starts again on the same ports: its ports (and
/// its admin ports, 6000 above) come from `range`, below the system's ephemeral range (32768 and
/// up on Linux), so no server another test starts on a free port (port 0), and no outgoing
/// connection, can take one of them while its realm is down. A base that
/// is taken (another such test, another program) is given up for another, up to 50 times.
func startOnFixedPorts(_ layout: RealmClusterLayout, range: Range<Int> = 20_000..<26_000, admin: Bool = false,
                       observer: (@Sendable (VaultMessageType, [UInt8]) -> Void)? = nil) async throws -> RealmCluster {
    var lastError: (any Error)?
    for _ in 0..<50 {
        let base = range.lowerBound + layout.count * Int.random(in: 0..<((range.count - layout.count) / layout.count))
        do {
            // Admin listeners (when asked for) 6000 ports above, also fixed: a restarted realm binds
            // its admin port again too.
            return try await RealmCluster.start(layout: layout, basePort: base, adminBasePort: admin ? base + 6_000 : nil,
                                                observer: observer)
        } catch {
            lastError = error
            guard "\(error)".contains("Address already in use") else { throw error }
        }
    }
    throw lastError!
}

/// Starts a stopped realm again on its port. The old listener can still be closing when `stop`
/// returns, so "address in use" is retried for up to 60 s (a deadline, not a wait: a loaded
/// machine may need more than a few seconds, an idle one returns at once).
func restart(_ realm: RealmHandle) async throws {
    let deadline = ContinuousClock.now + .seconds(60)
    while true {
        do {
            try await realm.start()
            return
        } catch where "\(error)".contains("Address already in use") && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(100))
        } catch where "\(error)".contains("Address already in use") {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/bin/sh")
            p.arguments = ["-c", "ss -ltnpa | grep -E ':\(realm.port)\\b' ; ss -tan | grep -c ':\(realm.port) '"]
            let pipe = Pipe()
            p.standardOutput = pipe
            try? p.run()
            p.waitUntilExit()
            let who = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            throw TestFailure("\(error); listening there now: \(who)")
        }
    }
}
