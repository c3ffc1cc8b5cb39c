import CofferVault
import Foundation
import Hummingbird
import Logging
import ServiceLifecycle

/// The HTTP edge of a realm: the protocol endpoints (`POST /v1/q0` … one path per message type,
/// bodies sealed both ways), `GET /v1/descriptor`, `GET /health` and `GET /metrics`.
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
        for path in ["/health", "/v1/health"] {
            router.get(RouterPath(path)) { _, _ -> Response in
                Response(status: .ok, headers: [.contentType: "text/plain"], body: ResponseBody(byteBuffer: ByteBuffer(string: "ok\n")))
            }
        }
        router.get("/metrics") { _, _ -> Response in
            Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                     body: ResponseBody(byteBuffer: ByteBuffer(string: service.metrics.render())))
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
