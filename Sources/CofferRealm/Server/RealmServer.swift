import CofferVault
import Foundation
import Hummingbird
import Logging
import ServiceLifecycle

/// The HTTP edge of a realm. The public listener serves the protocol endpoints (`POST /v1/q0` …
/// one path per message type, bodies sealed both ways) and `GET /v1/descriptor`, nothing else; the
/// operator's endpoints, `GET /health` and `GET /metrics`, are on a separate admin listener
/// (`adminApplication`), which an operator binds to a private address.
public enum RealmServer {
    /// Largest request body accepted: key id + X-Wing encapsulation + padded body + GCM tag, with room.
    static let maxRequestSize = 16 * 1024

    /// Builds the Hummingbird application for `service`, listening on `host:port` (port 0: any free
    /// port; `onListening` receives the bound port).
    public static func application(
        service: RealmService, host: String, port: Int, logger: Logger? = nil,
        onListening: (@Sendable (Int) async -> Void)? = nil
    ) -> some ApplicationProtocol {
        let router = Router()
        for type in VaultMessageType.allCases {
            router.post(RouterPath(type.path)) { request, _ -> Response in
                let body: ByteBuffer
                do {
                    body = try await request.body.collect(upTo: maxRequestSize)
                } catch {
                    return Response(status: .badRequest)
                }
                switch await service.handle(type: type, request: Array(body.readableBytesView)) {
                case .undecryptable:
                    return Response(status: .badRequest)
                case .sealed(let bytes):
                    return Response(status: .ok, headers: [.contentType: "application/octet-stream"],
                                    body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
                }
            }
        }
        router.get("/v1/descriptor") { request, _ -> Response in
            let host = request.head.authority ?? "\(host):\(port)"
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            let json = (try? enc.encode(service.descriptor(url: "http://\(host)"))) ?? Data()
            return Response(status: .ok, headers: [.contentType: "application/json"],
                            body: ResponseBody(byteBuffer: ByteBuffer(bytes: Array(json))))
        }
        var l = logger ?? Logger(label: "coffer.realm.http")
        l[metadataKey: "realm"] = .string(service.keys.realmIDHex)
        return Application(
            router: router,
            configuration: .init(address: .hostname(host, port: port), serverName: "coffer-realm"),
            services: [RealmSweeper(service: service)],
            onServerRunning: { channel in
                await onListening?(channel.localAddress?.port ?? port)
            },
            logger: l)
    }
}

extension RealmServer {
    /// The admin listener of `service`: `GET /health` (`ok`), `GET /ready` (200 `ready` when the store
    /// answers, else 503) and `GET /metrics` (Prometheus text), nothing else, on `host:port` (port 0: any free port; `onListening` receives the bound port).
    /// Serve it on an address only the operator's monitoring reaches (e.g. 127.0.0.1 or a private
    /// network): the metrics say how many guesses, unlocks and refusals a realm sees.
    public static func adminApplication(
        service: RealmService, host: String, port: Int, logger: Logger? = nil,
        onListening: (@Sendable (Int) async -> Void)? = nil
    ) -> some ApplicationProtocol {
        let router = Router()
        router.get("/health") { _, _ -> Response in
            Response(status: .ok, headers: [.contentType: "text/plain"], body: ResponseBody(byteBuffer: ByteBuffer(string: "ok\n")))
        }
        // Readiness: whether this process can serve requests now, i.e. its store answers (a
        // PostgreSQL database that cannot be reached makes it 503, so a load balancer sends the
        // realm's traffic to another process). /health stays "the process is up".
        router.get("/ready") { _, _ -> Response in
            do {
                try await service.store.checkReady()
                service.metrics.setStoreUp(true)
                return Response(status: .ok, headers: [.contentType: "text/plain"], body: ResponseBody(byteBuffer: ByteBuffer(string: "ready\n")))
            } catch {
                service.metrics.setStoreUp(false)
                service.logger.warning("not ready", metadata: ["store": "\(service.store.storeDescription)", "error": "\(error)"])
                return Response(status: .serviceUnavailable, headers: [.contentType: "text/plain"],
                                body: ResponseBody(byteBuffer: ByteBuffer(string: "not ready: the store does not answer (see the realm's log)\n")))
            }
        }
        router.get("/metrics") { _, _ -> Response in
            Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                     body: ResponseBody(byteBuffer: ByteBuffer(string: service.metrics.render())))
        }
        var l = logger ?? Logger(label: "coffer.realm.admin")
        l[metadataKey: "realm"] = .string(service.keys.realmIDHex)
        return Application(
            router: router,
            configuration: .init(address: .hostname(host, port: port), serverName: "coffer-realm-admin"),
            onServerRunning: { channel in
                await onListening?(channel.localAddress?.port ?? port)
            },
            logger: l)
    }

    /// Serves `service` on `host:port` and, when `admin` is set, its admin listener there, until
    /// SIGTERM or SIGINT (then both stop gracefully). `coffer realm serve` runs this.
    public static func serve(service: RealmService, host: String, port: Int, admin: (host: String, port: Int)?, logger: Logger,
                             onListening: @escaping @Sendable (Int) async -> Void,
                             onAdminListening: @escaping @Sendable (String, Int) async -> Void) async throws {
        var services: [any Service] = [application(service: service, host: host, port: port, logger: logger, onListening: onListening)]
        if let admin {
            let adminHost = admin.host
            services.append(adminApplication(service: service, host: adminHost, port: admin.port, logger: logger) { bound in
                await onAdminListening(adminHost, bound)
            })
        }
        let group = ServiceGroup(configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        // The servers return from a graceful shutdown once their in-flight requests are answered
        // (each guess's transaction committed); only then does the store close.
        do {
            try await group.run()
        } catch {
            await service.close()
            throw error
        }
        await service.close()
    }

    /// Parses `HOST:PORT` (`[v6]:PORT` too) as `--listen`, `--admin-listen` and `adminListen` take it.
    public static func parseListen(_ s: String, option: String = "--listen") throws -> (host: String, port: Int) {
        guard let colon = s.lastIndex(of: ":"), let port = Int(s[s.index(after: colon)...]), (0...65535).contains(port),
              colon > s.startIndex
        else {
            throw RealmFileError(path: "", message: "\(option) must be HOST:PORT, e.g. 127.0.0.1:7301 (got '\(s)')")
        }
        var host = String(s[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return (host, port)
    }
}

/// Periodic housekeeping (expired tickets, challenges, pending registrations; records whose last
/// challenge expired are destroyed). Stops at graceful shutdown.
struct RealmSweeper: Service {
    let service: RealmService
    var interval: Duration = .seconds(10)

    func run() async throws {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                let destroyed = try await service.store.sweep()
                if destroyed > 0 {
                    service.metrics.lockouts.increment(by: destroyed)
                    service.logger.info("audit", metadata: ["event": "lock", "count": "\(destroyed)", "via": "expiry"])
                }
            } catch {
                service.logger.error("sweep failed", metadata: ["error": "\(error)"])
            }
            try? await cancelWhenGracefulShutdown {
                try await Task.sleep(for: interval)
            }
        }
    }
}
