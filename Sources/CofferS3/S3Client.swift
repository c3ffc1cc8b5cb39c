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
import CofferStorage
import Crypto
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import CofferCore

/// One HTTP response with its body collected: what the S3 client and the WebDAV client (which
/// builds on this module) hand to their error mapping and parsers.
package struct HTTPResponseCollected: Sendable {
    package var status: HTTPResponseStatus
    package var headers: HTTPHeaders
    package var body: ByteBuffer

    package init(status: HTTPResponseStatus, headers: HTTPHeaders, body: ByteBuffer) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    package var bodyBytes: [UInt8] { Array(body.readableBytesView) }
}

/// Signs, sends and retries S3 requests, bounded in concurrency. No secrets in errors or logs.
final class S3Client: Sendable {
    let configuration: S3Configuration
    let http: HTTPClient
    let signer: SigV4Signer
    let endpoint: EndpointParts
    let gate: AsyncGate
    let logger: Logger

    init(configuration: S3Configuration, logger: Logger) {
        self.configuration = configuration
        self.endpoint = EndpointParts(configuration.endpoint)!
        self.signer = SigV4Signer(credentials: configuration.credentials, region: configuration.region)
        self.logger = logger
        let o = configuration.options
        var config = HTTPClient.Configuration(
            redirectConfiguration: .disallow,
            timeout: .init(connect: .init(o.connectTimeout), read: .init(o.readTimeout)),
            decompression: .disabled)
        config.connectionPool = .init(idleTimeout: .seconds(30),
                                      concurrentHTTP1ConnectionsPerHostSoftLimit: o.maxConcurrentRequests)
        config.httpVersion = .http1Only
        // A refused or failed connect fails the attempt at once; `send` retries it with backoff,
        // says so (`onRetry`) and stops at the budget, instead of the pool retrying silently until
        // the connect timeout (which made a refused endpoint cost ~87 s of silence).
        config.connectionPool.retryConnectionEstablishment = false
        self.http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: config)
        self.gate = AsyncGate(limit: o.maxConcurrentRequests)
    }

    func shutdown() async {
        do { try await http.shutdown() } catch {
            logger.debug("S3 client shutdown: \(error)")
        }
    }

    /// The full key of an object name under the repository prefix.
    func key(_ name: String) -> String {
        configuration.prefix.isEmpty ? name : "\(configuration.prefix)/\(name)"
    }

    /// Host header and encoded path for `key` (`nil` addresses the bucket itself).
    func address(key: String?) -> (host: String, path: String) {
        let encodedKey = key.map { SigV4Signer.uriEncode($0, encodeSlash: false) } ?? ""
        switch configuration.addressing {
        case .path:
            // The bucket itself is `/bucket`; an object is `/bucket/key`.
            return (endpoint.hostHeader, key == nil ? "/\(configuration.bucket)" : "/\(configuration.bucket)/\(encodedKey)")
        case .virtualHost:
            return ("\(configuration.bucket).\(endpoint.hostHeader)", "/\(encodedKey)")
        }
    }

    /// Sends one request with retries. `accept` says which statuses are answers rather than errors.
    /// - Parameters:
    ///   - name: the object concerned, for error messages.
    func send(_ method: HTTPMethod, key: String?, query: [(String, String)] = [], headers extra: [(String, String)] = [],
              body: ByteBuffer? = nil, bodySHA256: [UInt8]? = nil, name: String?,
              accept: (HTTPResponseStatus) -> Bool = { (200..<300).contains($0.code) },
              maxBody: Int = 64 << 20) async throws(StorageError) -> HTTPResponseCollected {
        let (host, path) = address(key: key)
        let payloadHash: String
        if let bodySHA256, body != nil {
            payloadHash = Hex.string(bodySHA256)
        } else {
            payloadHash = body.map { $0.withUnsafeReadableBytes { SHA256.hash(data: $0).hexString } } ?? SigV4Signer.emptyPayloadHash
        }
        let queryString = query
            .map { "\(SigV4Signer.uriEncode($0.0, encodeSlash: true))=\(SigV4Signer.uriEncode($0.1, encodeSlash: true))" }
            .joined(separator: "&")
        let url = "\(endpoint.scheme)://\(host)\(path)\(queryString.isEmpty ? "" : "?" + queryString)"
        let options = configuration.options
        var attempt = 0
        var firstFailure: ContinuousClock.Instant?
        while true {
            attempt += 1
            let outcome: Result<HTTPResponseCollected, StorageError>
            do {
                try await gate.acquire()
            } catch {
                throw StorageError(.transient, name: name, message: "S3 request cancelled")
            }
            outcome = await attemptOnce(method, url: url, host: host, path: path, query: query, headers: extra,
                                        body: body, payloadHash: payloadHash, name: name, accept: accept, maxBody: maxBody)
            await gate.release()
            switch outcome {
            case .success(let response):
                return response
            case .failure(let error):
                let started = firstFailure ?? ContinuousClock.now
                firstFailure = started
                let refused = error.code == .connectionRefused
                guard error.isTransient, !Task.isCancelled else { throw error }
                let delay = backoff(attempt: attempt)
                let spent = ContinuousClock.now - started
                let overBudget = options.retryBudget.map { spent + delay > $0 } ?? false
                guard attempt < options.maxAttempts, !overBudget else {
                    guard attempt > 1 else { throw error }
                    let why = overBudget ? "the retry budget of \(Self.seconds(options.retryBudget ?? .zero)) (COFFER_NETWORK_BUDGET) is spent"
                                         : "no retries left"
                    throw StorageError(error.code, name: error.name,
                                       message: "\(error.message); gave up after \(attempt) attempts in \(Self.seconds(spent)): \(why)",
                                       underlying: error.underlying)
                }
                options.onRetry?(S3RetryNotice(endpoint: configuration.endpoint,
                                               problem: refused ? "refused the connection" : error.message, refused: refused,
                                               attempt: attempt + 1, maxAttempts: options.maxAttempts, delay: delay))
                logger.debug("S3 \(method.rawValue) \(name ?? configuration.bucket) failed (\(error.message)); retry \(attempt) in \(delay)")
                do { try await Task.sleep(for: delay) } catch {
                    throw StorageError(.transient, name: name, message: "S3 request cancelled")
                }
            }
        }
    }

    /// Exponential backoff with full jitter: a random delay in [0, min(max, initial · 2^(attempt-1))].
    func backoff(attempt: Int) -> Duration {
        let o = configuration.options
        let base = o.initialBackoff * (1 << min(attempt - 1, 20))
        let cap = min(base, o.maxBackoff)
        let capNanos = Int64(cap.components.seconds) * 1_000_000_000 + cap.components.attoseconds / 1_000_000_000
        return .nanoseconds(Int64.random(in: 0...max(capNanos, 1)))
    }

    private func attemptOnce(_ method: HTTPMethod, url: String, host: String, path: String, query: [(String, String)],
                             headers extra: [(String, String)], body: ByteBuffer?, payloadHash: String, name: String?,
                             accept: (HTTPResponseStatus) -> Bool, maxBody: Int) async -> Result<HTTPResponseCollected, StorageError> {
        let now = Date()
        var signed: [(String, String)] = [
            ("host", host),
            ("x-amz-date", SigV4Signer.amzDate(now)),
            ("x-amz-content-sha256", payloadHash),
        ]
        if let token = configuration.credentials.sessionToken { signed.append(("x-amz-security-token", token)) }
        signed.append(contentsOf: extra)
        let signature = signer.sign(.init(method: method.rawValue, encodedPath: path, query: query,
                                          headers: signed, payloadHash: payloadHash), date: now)
        var request = HTTPClientRequest(url: url)
        request.method = method
        for (k, v) in signed { request.headers.add(name: k, value: v) }
        request.headers.add(name: "authorization", value: signature.authorization)
        request.headers.add(name: "user-agent", value: "coffer")
        if let body {
            request.body = .bytes(body)
        } else if method == .PUT || method == .POST {
            request.headers.add(name: "content-length", value: "0")
        }

        let response: HTTPClientResponse
        let collected: ByteBuffer
        do {
            // The per-request deadline is generous: the read timeout catches stalls; this catches
            // a server that trickles bytes forever.
            let size = body?.readableBytes ?? 0
            let deadline = TimeAmount.seconds(120 + Int64(size / (256 * 1024)))
            response = try await http.execute(request, timeout: deadline)
            collected = try await response.body.collect(upTo: maxBody)
        } catch {
            if Self.isRefused(error) {
                return .failure(StorageError(.connectionRefused, name: name,
                                             message: "\(Self.refusedPrefix)\(configuration.endpoint) refused the connection (nothing listens there)"))
            }
            return .failure(Self.transportError(error, name: name))
        }
        // A body cut short must never pass for the object: check it against Content-Length.
        if method != .HEAD, let lengthText = response.headers.first(name: "content-length"), let length = Int(lengthText),
           length != collected.readableBytes {
            return .failure(StorageError(.transient, name: name,
                                         message: "S3 response was cut short (\(collected.readableBytes) of \(length) bytes)"))
        }
        let result = HTTPResponseCollected(status: response.status, headers: response.headers, body: collected)
        if accept(response.status) { return .success(result) }
        return .failure(mapError(result, method: method, name: name))
    }

    static let refusedPrefix = "S3 endpoint "

    /// A connect that the other side refused (ECONNREFUSED): instant, and no use waiting for.
    /// Decided by the error's type and errno, never its text (`NIOConnectionError` holds each
    /// attempt's `IOError`).
    static func isRefused(_ error: any Error) -> Bool {
        if let e = error as? NIOConnectionError { return e.connectionErrors.contains { isRefused($0.error) } }
        if let e = error as? IOError { return e.errnoCode == ECONNREFUSED }
        return false
    }

    /// "0.4 s".
    static func seconds(_ d: Duration) -> String {
        let c = d.components
        let tenths = Int((Double(c.seconds) * 10 + Double(c.attoseconds) / 1e17).rounded())
        return "\(tenths / 10).\(tenths % 10) s"
    }

    static func transportError(_ error: any Error, name: String?) -> StorageError {
        let kind: String
        if let e = error as? HTTPClientError {
            if e == .cancelled {
                return StorageError(.transient, name: name, message: "S3 request cancelled")
            }
            kind = "\(e)"
        } else if let e = error as? NIOTooManyBytesError {
            return StorageError(.permanent, name: name, message: "S3 response larger than expected (\(e))")
        } else {
            kind = "\(error)"
        }
        return StorageError(.transient, name: name, message: "S3 request failed: \(kind)", underlying: nil)
    }

    /// Turns an S3 error response into a StorageError. Never echoes the server's message for
    /// signature errors: it contains the string-to-sign, which we keep out of logs.
    func mapError(_ r: HTTPResponseCollected, method: HTTPMethod, name: String?) -> StorageError {
        let xml = try? XMLElement.parse(r.bodyBytes)
        let code = xml?["Code"] ?? ""
        let serverMessage = xml?["Message"] ?? ""
        let status = r.status.code
        let where_ = name.map { "object \($0) in \(configuration.location)" } ?? configuration.location
        switch code {
        case "InvalidAccessKeyId":
            return StorageError(.accessDenied, name: name, message: "S3 rejected the access key (InvalidAccessKeyId): check AWS_ACCESS_KEY_ID or the profile's aws_access_key_id")
        case "SignatureDoesNotMatch":
            return StorageError(.accessDenied, name: name, message: "S3 rejected the request signature (SignatureDoesNotMatch): the secret key is wrong; check AWS_SECRET_ACCESS_KEY or the profile's aws_secret_access_key")
        case "InvalidToken", "ExpiredToken", "TokenRefreshRequired":
            return StorageError(.accessDenied, name: name, message: "S3 rejected the session token (\(code)): refresh AWS_SESSION_TOKEN")
        case "AccessDenied", "AllAccessDisabled", "AccountProblem":
            return StorageError(.accessDenied, name: name, message: "S3 denied access to \(where_) (\(code)): the credentials are valid but lack permission")
        case "NoSuchBucket":
            return StorageError(.missingContainer, name: name, message: "bucket \(configuration.bucket) does not exist at \(configuration.endpoint) (NoSuchBucket): create it or fix the URL")
        case "RequestTimeTooSkewed":
            return StorageError(.clockSkew, name: name, message: "S3 refused the request because this device's clock is too far from the server's (RequestTimeTooSkewed): set the clock correctly")
        case "NoSuchKey":
            return .notFound(name ?? "")
        case "InvalidRange":
            return StorageError(.rangeNotSatisfiable, name: name, message: "requested range lies outside \(where_)")
        case "PreconditionFailed":
            return StorageError(.alreadyExists, name: name, message: "object \(name ?? "") already exists")
        case "SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "OperationAborted", "ConditionalRequestConflict":
            return StorageError(.transient, name: name, message: "S3 is busy or failed (\(code), HTTP \(status))")
        case "QuotaExceeded", "EntityTooLarge":
            return StorageError(.noSpace, name: name, message: "S3 refused to store \(where_) (\(code)): quota or size limit")
        case "PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException":
            let region = xml?["Region"].map { " (the bucket is in \($0))" } ?? ""
            return StorageError(.permanent, name: name, message: "bucket \(configuration.bucket) is not in region \(configuration.region)\(region): set AWS_REGION or the URL's ?region=")
        default:
            break
        }
        switch status {
        case 500...599, 429:
            return StorageError(.transient, name: name, message: "S3 answered HTTP \(status)\(code.isEmpty ? "" : " (\(code))")")
        case 401, 403:
            return StorageError(.accessDenied, name: name, message: "S3 denied access to \(where_) (HTTP \(status)\(code.isEmpty ? "" : ", \(code)")): check the credentials and their permissions")
        case 404:
            if method == .HEAD || code.isEmpty { return .notFound(name ?? "") }
            return StorageError(.notFound, name: name, message: "\(where_) not found (\(code))")
        case 412:
            return StorageError(.alreadyExists, name: name, message: "object \(name ?? "") already exists")
        case 416:
            return StorageError(.rangeNotSatisfiable, name: name, message: "requested range lies outside \(where_)")
        case 301, 307:
            return StorageError(.permanent, name: name, message: "S3 redirected the request (HTTP \(status)): the bucket is probably in another region; set AWS_REGION")
        default:
            let detail = serverMessage.isEmpty ? "" : ": \(serverMessage.prefix(200))"
            return StorageError(.permanent, name: name, message: "S3 answered HTTP \(status)\(code.isEmpty ? "" : " (\(code))")\(detail)")
        }
    }
}

/// A counting semaphore for async code: at most `limit` holders at once, FIFO.
package actor AsyncGate {
    private let limit: Int
    private var inUse = 0
    private var waiters: [CheckedContinuation<Void, Never>] = []

    package init(limit: Int) { self.limit = max(1, limit) }

    package func acquire() async throws {
        try Task.checkCancellation()
        if inUse < limit {
            inUse += 1
            return
        }
        await withCheckedContinuation { waiters.append($0) }
    }

    package func release() {
        if waiters.isEmpty {
            inUse -= 1
        } else {
            // Hand the slot straight to the next waiter.
            waiters.removeFirst().resume()
        }
    }
}
