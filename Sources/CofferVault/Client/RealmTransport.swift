#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Darwin)
import Darwin
#elseif canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import AsyncHTTPClient
import NIOCore
import NIOPosix

/// Carries one sealed request to one realm and returns its decoded answer.
public protocol RealmTransport: Sendable {
    func call(_ request: VaultRequest, realm: PinnedRealm) async -> RealmReply
}

extension RealmTransport {
    /// Sends every request in parallel; the dictionary has one reply per request.
    public func callAll(_ requests: [RealmID: VaultRequest], realms: [PinnedRealm]) async -> [RealmID: RealmReply] {
        await withTaskGroup(of: (RealmID, RealmReply).self) { group in
            for realm in realms {
                guard let request = requests[realm.id] else { continue }
                group.addTask { (realm.id, await self.call(request, realm: realm)) }
            }
            var out = [RealmID: RealmReply]()
            for await (id, reply) in group { out[id] = reply }
            return out
        }
    }
}

/// HTTP transport: `POST {url}{path}` with the sealed body; only a 200 whose body opens with this
/// request's context and decodes strictly counts as an answer.
public struct HTTPRealmTransport: RealmTransport {
    public let timeout: TimeAmount
    let client: HTTPClient
    /// Test hook: sees each plaintext request body just before sealing (what the realm decrypts).
    let observer: (@Sendable (RealmID, VaultMessageType, [UInt8]) -> Void)?

    /// The default client: like `HTTPClient.shared`, but a connect that fails (a realm that is down
    /// refuses at once) fails the request at once instead of being retried silently until the
    /// timeout, so that a refused realm costs nothing and the others make the quorum.
    public static let defaultClient: HTTPClient = {
        var pool = HTTPClient.Configuration.ConnectionPool(idleTimeout: .seconds(60))
        pool.retryConnectionEstablishment = false
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: HTTPClient.Configuration(connectionPool: pool))
    }()

    /// - Parameters:
    ///   - timeout: per request (default 10 s).
    ///   - client: defaults to ``defaultClient``.
    public init(timeout: TimeAmount = .seconds(10), client: HTTPClient = HTTPRealmTransport.defaultClient,
                observer: (@Sendable (RealmID, VaultMessageType, [UInt8]) -> Void)? = nil) {
        self.timeout = timeout
        self.client = client
        self.observer = observer
    }

    public func call(_ request: VaultRequest, realm: PinnedRealm) async -> RealmReply {
        guard let key = realm.keys.first else { return .failure(.unreachable("no pinned key")) }
        let body: [UInt8]
        do { body = try request.encode() } catch { return .failure(.malformed("request: \(error)")) }
        observer?(realm.id, request.type, body)
        let sealed: [UInt8], opener: ResponseOpener
        do { (sealed, opener) = try VaultChannel.sealRequest(body: body, type: request.type, realmID: realm.id, key: key) } catch {
            return .failure(.malformed("seal: \(error)"))
        }
        var http = HTTPClientRequest(url: realm.baseURL + request.type.path)
        http.method = .POST
        http.headers.add(name: "Content-Type", value: "application/octet-stream")
        http.body = .bytes(ByteBuffer(bytes: sealed))
        let bytes: [UInt8]
        let started = ContinuousClock.now
        var client = self.client
        var limit = timeout
        while true {
            do {
                let response = try await client.execute(http, timeout: limit)
                guard response.status == .ok else { return .failure(.httpStatus(Int(response.status.code))) }
                var buffer = try await response.body.collect(upTo: 64 * 1024)
                bytes = buffer.readBytes(length: buffer.readableBytes) ?? []
                break
            } catch let error as HTTPClientError where error == .deadlineExceeded || error == .connectTimeout || error == .readTimeout {
                return .failure(.timeout)
            } catch {
                if Self.isRefused(error) {
                    // Nothing listens there: no use waiting for the timeout.
                    return .failure(.unreachable("refused the connection (nothing listens at \(realm.baseURL))"))
                }
                // Another failure to connect (the request was never sent, so no guess can be spent
                // twice): once more with a client that retries the connection until the timeout.
                let spent = (ContinuousClock.now - started).components
                let left = timeout - .nanoseconds(spent.seconds * 1_000_000_000 + spent.attoseconds / 1_000_000_000)
                let connectFailure = error is NIOConnectionError
                guard connectFailure, client === HTTPRealmTransport.defaultClient, client !== HTTPClient.shared, left > .zero else {
                    return .failure(.unreachable(String(describing: error)))
                }
                client = HTTPClient.shared
                limit = left
            }
        }
        let plain: [UInt8]
        do { plain = try opener.open(bytes) } catch { return .failure(.unsealed) }
        do { return .success(try VaultAnswer.decode(plain, for: request.type)) } catch {
            return .failure(.malformed(error.description))
        }
    }

    /// A connect the other side refused (ECONNREFUSED), by the error's type and errno, never its
    /// text: NIO reports a failed connect as `NIOConnectionError` holding each attempt's `IOError`.
    static func isRefused(_ error: any Error) -> Bool {
        if let e = error as? NIOConnectionError { return e.connectionErrors.contains { isRefused($0.error) } }
        if let e = error as? IOError { return e.errnoCode == ECONNREFUSED }
        return false
    }
}
