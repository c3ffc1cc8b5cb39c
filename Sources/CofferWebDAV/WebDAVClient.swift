#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import AsyncHTTPClient
import CofferS3
import CofferStorage
import Logging
import NIOCore
import NIOHTTP1
import Synchronization

/// Sends and retries WebDAV requests with Basic or Digest authentication, bounded in concurrency.
/// The only retry layer of the backend. No secrets in errors or logs.
final class WebDAVClient: Sendable {
    let configuration: WebDAVConfiguration
    let http: HTTPClient
    let gate: AsyncGate
    let logger: Logger
    /// How requests authenticate, learnt from the server's first 401 and reused afterwards.
    private let auth = Mutex<AuthState>(.none)

    enum AuthState: Sendable {
        case none
        case basic
        case digest(DigestAuth, nc: Int)
    }

    init(configuration: WebDAVConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        let o = configuration.options
        var config = HTTPClient.Configuration(
            redirectConfiguration: .disallow,
            timeout: .init(connect: .init(o.connectTimeout), read: .init(o.readTimeout)),
            decompression: .disabled)
        config.connectionPool = .init(idleTimeout: .seconds(30),
                                      concurrentHTTP1ConnectionsPerHostSoftLimit: o.maxConcurrentRequests)
        config.httpVersion = .http1Only
        self.http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: config)
        self.gate = AsyncGate(limit: o.maxConcurrentRequests)
    }

    func shutdown() async {
        do { try await http.shutdown() } catch {
            logger.debug("WebDAV client shutdown: \(error)")
        }
    }

    /// `scheme://host:port`, for request URLs and the `Destination` header.
    var origin: String {
        let host = configuration.host.contains(":") ? "[\(configuration.host)]" : configuration.host
        return "\(configuration.scheme)://\(host):\(configuration.port)"
    }

    /// The encoded absolute path of `segments` under the repository root; a trailing `/` for folders.
    func path(_ segments: [String], folder: Bool = false) -> String {
        let all = configuration.rootSegments + segments
        let joined = "/" + all.map(WebDAVPath.encodeSegment).joined(separator: "/")
        return folder && !all.isEmpty ? joined + "/" : joined
    }

    /// Sends one request, retrying transient failures with exponential backoff and full jitter.
    /// `accept` says which statuses are answers rather than errors.
    func send(_ method: HTTPMethod, path: String, headers extra: [(String, String)] = [], body: ByteBuffer? = nil,
              name: String?, accept: (HTTPResponseStatus) -> Bool = { (200..<300).contains($0.code) },
              maxBody: Int = 64 << 20) async throws(StorageError) -> HTTPResponseCollected {
        let options = configuration.options
        var attempt = 0
        var authRounds = 0
        var freshChallenge = false
        while true {
            attempt += 1
            do {
                try await gate.acquire()
            } catch {
                throw StorageError(.transient, name: name, message: "WebDAV request cancelled")
            }
            let outcome = await attemptOnce(method, path: path, headers: extra, body: body, name: name, maxBody: maxBody)
            await gate.release()
            var failure: StorageError
            switch outcome {
            case .success(let response) where response.status == .unauthorized:
                // Learn (or refresh) how to authenticate, then try again at once: not a transient fault.
                let challenges = response.headers["www-authenticate"].flatMap { AuthChallenge.parse($0) }
                let stale = challenges.contains { $0.scheme == "digest" && $0.parameters["stale"]?.lowercased() == "true" }
                guard let credentials = configuration.credentials else {
                    throw StorageError(.accessDenied, name: name, message: "the WebDAV server at \(configuration.location) asks for a user and password: set COFFER_WEBDAV_USER and COFFER_WEBDAV_PASSWORD (or COFFER_WEBDAV_PASSWORD_COMMAND, or a netrc entry)")
                }
                if (freshChallenge && !stale) || authRounds >= 4 {
                    throw StorageError(.accessDenied, name: name, message: "the WebDAV server at \(configuration.location) rejected user \"\(credentials.user)\" (HTTP 401): check COFFER_WEBDAV_USER and the password")
                }
                if let digest = DigestAuth.best(of: challenges) {
                    auth.withLock { $0 = .digest(digest, nc: 0) }
                } else if challenges.contains(where: { $0.scheme == "basic" }) {
                    if configuration.scheme != "https" && !Self.isLoopback(configuration.host) {
                        logger.debug("WebDAV: Basic authentication over plain http to \(configuration.host): the password travels unencrypted")
                    }
                    auth.withLock { $0 = .basic }
                } else {
                    let offered = challenges.map(\.scheme).joined(separator: ", ")
                    throw StorageError(.accessDenied, name: name, message: "the WebDAV server at \(configuration.location) asks for an authentication scheme Coffer does not support (\(offered.isEmpty ? "none named" : offered)); Basic and Digest (MD5, SHA-256) are supported")
                }
                freshChallenge = true
                authRounds += 1
                attempt -= 1
                continue
            case .success(let response):
                if accept(response.status) { return response }
                failure = mapError(response, method: method, name: name)
            case .failure(let error):
                failure = error
            }
            guard failure.isTransient, attempt < options.maxAttempts, !Task.isCancelled else { throw failure }
            let delay = backoff(attempt: attempt)
            logger.debug("WebDAV \(method.rawValue) \(name ?? configuration.location) failed (\(failure.message)); retry \(attempt) in \(delay)")
            do { try await Task.sleep(for: delay) } catch {
                throw StorageError(.transient, name: name, message: "WebDAV request cancelled")
            }
        }
    }

    static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host.hasPrefix("127.") || host == "::1"
    }

    /// Exponential backoff with full jitter: a random delay in [0, min(max, initial · 2^(attempt-1))].
    func backoff(attempt: Int) -> Duration {
        let o = configuration.options
        let base = o.initialBackoff * (1 << min(attempt - 1, 20))
        let cap = min(base, o.maxBackoff)
        let capNanos = Int64(cap.components.seconds) * 1_000_000_000 + cap.components.attoseconds / 1_000_000_000
        return .nanoseconds(Int64.random(in: 0...max(capNanos, 1)))
    }

    /// The `Authorization` header for one request, from what the server asked for last.
    private func authorization(method: HTTPMethod, path: String) -> String? {
        guard let credentials = configuration.credentials else { return nil }
        return auth.withLock { state -> String? in
            switch state {
            case .none:
                return nil
            case .basic:
                return "Basic " + Data("\(credentials.user):\(credentials.password)".utf8).base64EncodedString()
            case .digest(let digest, let nc):
                state = .digest(digest, nc: nc + 1)
                var cnonce = SystemRandomNumberGenerator()
                let c = (0..<2).map { _ in String(cnonce.next() as UInt64, radix: 16) }.joined()
                return digest.authorization(method: method.rawValue, uri: path, credentials: credentials, nc: nc + 1, cnonce: c)
            }
        }
    }

    private func attemptOnce(_ method: HTTPMethod, path: String, headers extra: [(String, String)], body: ByteBuffer?,
                             name: String?, maxBody: Int) async -> Result<HTTPResponseCollected, StorageError> {
        var request = HTTPClientRequest(url: origin + path)
        request.method = method
        for (k, v) in extra { request.headers.add(name: k, value: v) }
        if let value = authorization(method: method, path: path) { request.headers.add(name: "authorization", value: value) }
        request.headers.add(name: "user-agent", value: "coffer")
        if let body, body.readableBytes > 0 {
            request.body = .bytes(body)
        } else if method == .PUT || method == .POST || method == .MKCOL || method == .MOVE {
            // An empty body is sent as `Content-Length: 0`: servers answer an empty chunked PUT
            // with 500 (lighttpd) or a closed connection (rclone).
            request.headers.add(name: "content-length", value: "0")
        }
        let response: HTTPClientResponse
        let collected: ByteBuffer
        do {
            // The read timeout catches stalls; this deadline catches a server that trickles bytes forever.
            let size = body?.readableBytes ?? 0
            let deadline = TimeAmount.seconds(120 + Int64(size / (256 * 1024)))
            response = try await http.execute(request, timeout: deadline)
            collected = try await response.body.collect(upTo: maxBody)
        } catch {
            return .failure(Self.transportError(error, name: name))
        }
        // A body cut short must never pass for the object: check it against Content-Length.
        if method != .HEAD, let lengthText = response.headers.first(name: "content-length"), let length = Int(lengthText),
           length != collected.readableBytes {
            return .failure(StorageError(.transient, name: name,
                                         message: "WebDAV response was cut short (\(collected.readableBytes) of \(length) bytes)"))
        }
        return .success(HTTPResponseCollected(status: response.status, headers: response.headers, body: collected))
    }

    static func transportError(_ error: any Error, name: String?) -> StorageError {
        if let e = error as? HTTPClientError, e == .cancelled {
            return StorageError(.transient, name: name, message: "WebDAV request cancelled")
        }
        if let e = error as? NIOTooManyBytesError {
            return StorageError(.permanent, name: name, message: "WebDAV response larger than expected (\(e))")
        }
        return StorageError(.transient, name: name, message: "WebDAV request failed: \(error)")
    }

    /// Turns an unexpected status into a StorageError. The server's body is not echoed (it is
    /// HTML at best and may repeat what was sent).
    func mapError(_ r: HTTPResponseCollected, method: HTTPMethod, name: String?) -> StorageError {
        let status = r.status.code
        let where_ = name.map { "object \($0) in \(configuration.location)" } ?? configuration.location
        switch status {
        case 403:
            return StorageError(.accessDenied, name: name, message: "the WebDAV server denied \(method.rawValue) on \(where_) (HTTP 403): the user lacks permission")
        case 404:
            return .notFound(name ?? "")
        case 412:
            return StorageError(.alreadyExists, name: name, message: "object \(name ?? "") already exists")
        case 416:
            return StorageError(.rangeNotSatisfiable, name: name, message: "requested range lies outside \(where_)")
        case 507:
            return StorageError(.noSpace, name: name, message: "the WebDAV server has no space left for \(where_) (HTTP 507 Insufficient Storage)")
        case 408, 423, 425, 429, 500...599:
            return StorageError(.transient, name: name, message: "the WebDAV server is busy or failed (HTTP \(status)) on \(method.rawValue) \(where_)")
        case 301, 302, 303, 307, 308:
            let target = r.headers.first(name: "location").map { " to \($0.prefix(200))" } ?? ""
            return StorageError(.permanent, name: name, message: "the WebDAV server redirected \(method.rawValue) \(where_)\(target) (HTTP \(status)): fix the repository URL (http/https, path)")
        default:
            return StorageError(.permanent, name: name, message: "the WebDAV server answered HTTP \(status) to \(method.rawValue) \(where_)")
        }
    }
}
