#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import AsyncHTTPClient
import CofferStorage
import Crypto
import Logging
import NIOCore
import NIOHTTP1
import CofferCore

/// A repository in an S3-compatible bucket (`s3://BUCKET/PREFIX`).
///
/// Objects are keys under the prefix. Writes above ``S3Options/multipartThreshold`` go up as a
/// multipart upload (aborted on failure); listings follow ListObjectsV2 continuation tokens;
/// batch deletes use DeleteObjects with up to 1000 keys. Transient failures (timeouts, resets,
/// 5xx, 429/SlowDown) are retried with exponential backoff and jitter; other 4xx are not.
/// Call ``close()`` when done: it shuts the connection pool down.
public final class S3Storage: Storage {
    public let configuration: S3Configuration
    let client: S3Client

    public var location: String { configuration.location }

    public init(configuration: S3Configuration, logger: Logger = Logger(label: "coffer.s3")) {
        self.configuration = configuration
        self.client = S3Client(configuration: configuration, logger: logger)
    }

    /// Opens `s3://BUCKET/PREFIX` with endpoint, region and credentials from `environment` (see
    /// ``S3Configuration/resolve(url:environment:)``).
    public static func open(url: String, environment: [String: String] = ProcessInfo.processInfo.environment,
                            options: S3Options = S3Options(), logger: Logger = Logger(label: "coffer.s3")) throws(StorageError) -> S3Storage {
        var config = try S3Configuration.resolve(url: url, environment: environment)
        config.options = options
        return S3Storage(configuration: config, logger: logger)
    }

    /// Runs `body` with a storage that is closed afterwards, whatever happens.
    public static func with<T>(_ configuration: S3Configuration, _ body: (S3Storage) async throws -> T) async throws -> T {
        let storage = S3Storage(configuration: configuration)
        do {
            let result = try await body(storage)
            await storage.close()
            return result
        } catch {
            await storage.close()
            throw error
        }
    }

    public func close() async {
        await client.shutdown()
    }

    // MARK: Storage

    /// Every request is retried here (backoff with jitter, within the network budget), so callers
    /// add no retry layer of their own.
    public var retriesTransientFailures: Bool { true }

    public func put(_ name: String, data: Data) async throws(StorageError) {
        try check(name)
        if data.count > configuration.options.multipartThreshold {
            try await multipartPut(name, data: data, ifAbsent: false)
        } else {
            _ = try await client.send(.PUT, key: client.key(name), body: ByteBuffer(bytes: data), name: name)
        }
    }

    /// Conditional create with `If-None-Match: *` (S3 since 2024; MinIO, moto). On servers that
    /// ignore the header this degrades to a plain put.
    public func create(_ name: String, data: Data) async throws(StorageError) {
        try await create(name, data: data, knownSHA256: nil)
    }

    /// Conditional create whose payload hash is already known (no second SHA-256 over the bytes).
    public func create(_ name: String, data: Data, sha256: [UInt8]) async throws(StorageError) {
        assert(sha256.count != 32 || Array(SHA256.hash(data: data)) == sha256, "create(_:data:sha256:) given another object's digest")
        try await create(name, data: data, knownSHA256: sha256.count == 32 ? sha256 : nil)
    }

    private func create(_ name: String, data: Data, knownSHA256: [UInt8]?) async throws(StorageError) {
        try check(name)
        do throws(StorageError) {
            if data.count > configuration.options.multipartThreshold {
                try await multipartPut(name, data: data, ifAbsent: true)
            } else {
                _ = try await client.send(.PUT, key: client.key(name), headers: [("if-none-match", "*")],
                                          body: ByteBuffer(bytes: data), bodySHA256: knownSHA256, name: name)
            }
        } catch where error.code == .alreadyExists {
            // A retry after a lost answer finds its own write: identical bytes count as success.
            if let existing = try? await get(name), existing == data { return }
            throw error
        }
    }

    public func get(_ name: String, range: Range<Int>?) async throws(StorageError) -> Data {
        try check(name)
        guard let range else {
            let r = try await client.send(.GET, key: client.key(name), name: name, maxBody: Int.max)
            return Data(r.body.readableBytesView)
        }
        guard range.lowerBound >= 0 else { throw StorageError.rangeNotSatisfiable(name: name, size: 0) }
        if range.isEmpty {
            // HTTP cannot ask for zero bytes; check the bound against the size instead.
            guard let info = try await stat(name) else { throw StorageError.notFound(name) }
            guard range.lowerBound <= info.size else { throw StorageError.rangeNotSatisfiable(name: name, size: info.size) }
            return Data()
        }
        let r: HTTPResponseCollected
        do {
            r = try await client.send(.GET, key: client.key(name), headers: [("range", "bytes=\(range.lowerBound)-\(range.upperBound - 1)")],
                                      name: name, maxBody: max(range.count, 1 << 20))
        } catch where error.code == .rangeNotSatisfiable {
            let size = (try? await stat(name))??.size ?? 0
            throw StorageError.rangeNotSatisfiable(name: name, size: size)
        }
        // S3 clamps a range that runs past the end; the protocol promises exactly the bytes asked for.
        if r.body.readableBytes != range.count {
            let total = r.headers.first(name: "content-range").flatMap { $0.split(separator: "/").last }.flatMap { Int($0) }
            if r.status == .ok {
                // A server that ignored Range sent the whole object.
                let whole = Data(r.body.readableBytesView)
                guard range.upperBound <= whole.count else { throw StorageError.rangeNotSatisfiable(name: name, size: whole.count) }
                return whole[range.lowerBound..<range.upperBound]
            }
            throw StorageError.rangeNotSatisfiable(name: name, size: total ?? r.body.readableBytes)
        }
        return Data(r.body.readableBytesView)
    }

    public func stat(_ name: String) async throws(StorageError) -> ObjectInfo? {
        try check(name)
        let r = try await client.send(.HEAD, key: client.key(name), name: name,
                                      accept: { (200..<300).contains($0.code) || $0 == .notFound })
        if r.status == .notFound { return nil }
        // Both fields decide what prune and the commit check do (an object's age, a pack's size):
        // a value the client cannot read is an error, never a guess such as 1970 or 0 bytes.
        guard let sizeText = r.headers.first(name: "content-length"), let size = Self.byteCount(sizeText) else {
            throw StorageError(.permanent, name: name, message: "S3 sent no valid Content-Length for \(name) in \(location) (\(Self.shown(r.headers.first(name: "content-length"))))")
        }
        guard let dateText = r.headers.first(name: "last-modified"), let modified = S3Date.parseHTTP(dateText) else {
            throw StorageError(.permanent, name: name, message: "S3 sent no valid Last-Modified for \(name) in \(location) (\(Self.shown(r.headers.first(name: "last-modified")))); expected an HTTP date such as Sun, 29 Nov 2026 02:05:28 GMT")
        }
        return ObjectInfo(name: name, size: size, modified: modified)
    }

    public func list(prefix: String) async throws(StorageError) -> [ObjectInfo] {
        let base = configuration.prefix.isEmpty ? "" : configuration.prefix + "/"
        var out: [ObjectInfo] = []
        var token: String?
        repeat {
            var query: [(String, String)] = [("list-type", "2"), ("prefix", base + prefix), ("max-keys", "1000")]
            if let token { query.append(("continuation-token", token)) }
            let r = try await client.send(.GET, key: nil, query: query, name: nil)
            guard let xml = try? XMLElement.parse(r.bodyBytes), xml.name == "ListBucketResult" else {
                throw StorageError(.transient, message: "S3 sent an unreadable listing of \(location)")
            }
            for item in xml.children("Contents") {
                guard let key = item["Key"], key.hasPrefix(base) else { continue }
                let name = String(key.dropFirst(base.count))
                // Keys that are not object names (a console's "folder/" markers, foreign files) are not ours.
                guard ObjectName.isValid(name) else { continue }
                guard let size = item["Size"].flatMap(Self.byteCount) else {
                    throw StorageError(.permanent, name: name, message: "S3 listed \(name) in \(location) without a valid Size (\(Self.shown(item["Size"])))")
                }
                // A wrong date here would make prune take a fresh pack for an old orphan.
                guard let modified = item["LastModified"].flatMap(S3Date.parseISO8601) else {
                    throw StorageError(.permanent, name: name, message: "S3 listed \(name) in \(location) without a valid LastModified (\(Self.shown(item["LastModified"]))); expected a time such as 2026-11-29T02:05:28.000Z")
                }
                out.append(ObjectInfo(name: name, size: size, modified: modified))
            }
            if xml["IsTruncated"] == "true" {
                guard let next = xml["NextContinuationToken"], !next.isEmpty, next != token else {
                    throw StorageError(.permanent, message: "S3 listing of \(location) is truncated without a continuation token")
                }
                token = next
            } else {
                token = nil
            }
        } while token != nil
        return out
    }

    public func delete(_ name: String) async throws(StorageError) {
        try check(name)
        _ = try await client.send(.DELETE, key: client.key(name), name: name,
                                  accept: { (200..<300).contains($0.code) || $0 == .notFound })
    }

    /// DeleteObjects in batches of up to 1000 keys (the S3 limit), with the required Content-MD5.
    public func delete(_ names: [String]) async throws(StorageError) {
        for name in names { try check(name) }
        var start = 0
        while start < names.count {
            let batch = names[start..<min(start + 1000, names.count)]
            start += batch.count
            var xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Quiet>true</Quiet>"
            for name in batch { xml += "<Object><Key>\(XMLElement.escape(client.key(name)))</Key></Object>" }
            xml += "</Delete>"
            let body = Data(xml.utf8)
            let md5 = Data(Insecure.MD5.hash(data: body)).base64EncodedString()
            let r = try await client.send(.POST, key: nil, query: [("delete", "")],
                                          headers: [("content-md5", md5), ("content-type", "application/xml")],
                                          body: ByteBuffer(bytes: body), name: nil)
            guard let result = try? XMLElement.parse(r.bodyBytes) else {
                throw StorageError(.transient, message: "S3 sent an unreadable answer to a batch delete in \(location)")
            }
            // Quiet mode lists only failures. NoSuchKey is success (idempotent delete).
            let failures = result.children("Error").filter { $0["Code"] != "NoSuchKey" }
            if let first = failures.first {
                let key = first["Key"] ?? ""
                let code = first["Code"] ?? "unknown"
                let errorCode: StorageError.Code = code == "AccessDenied" ? .accessDenied
                    : (["InternalError", "SlowDown", "ServiceUnavailable"].contains(code) ? .transient : .permanent)
                throw StorageError(errorCode, name: key, message: "S3 could not delete \(failures.count) object(s) in \(location), first \(key): \(code)")
            }
        }
    }

    /// Creates the bucket (for `init` against a fresh server). A bucket already owned by these
    /// credentials is success.
    public func createBucket() async throws(StorageError) {
        var body: ByteBuffer?
        if configuration.region != "us-east-1" {
            body = ByteBuffer(string: "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LocationConstraint>\(configuration.region)</LocationConstraint></CreateBucketConfiguration>")
        }
        let r = try await client.send(.PUT, key: nil, body: body, name: nil,
                                      accept: { (200..<300).contains($0.code) || $0 == .conflict })
        if r.status == .conflict {
            let code = (try? XMLElement.parse(r.bodyBytes))?["Code"] ?? ""
            if code == "BucketAlreadyOwnedByYou" { return }
            throw StorageError(.permanent, message: "cannot create bucket \(configuration.bucket) (\(code.isEmpty ? "HTTP 409" : code)): the name is taken")
        }
    }

    // MARK: Multipart

    private func multipartPut(_ name: String, data: Data, ifAbsent: Bool) async throws(StorageError) {
        let key = client.key(name)
        let created = try await client.send(.POST, key: key, query: [("uploads", "")], name: name)
        guard let xml = try? XMLElement.parse(created.bodyBytes), let uploadID = xml["UploadId"], !uploadID.isEmpty else {
            throw StorageError(.transient, name: name, message: "S3 did not start a multipart upload of \(name)")
        }
        do throws(StorageError) {
            let partSize = max(configuration.options.partSize, 5 << 20)
            let partCount = (data.count + partSize - 1) / partSize
            let etags = try await uploadParts(key: key, name: name, uploadID: uploadID, data: data,
                                              partSize: partSize, partCount: partCount)
            var body = "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
            for (i, etag) in etags.enumerated() {
                body += "<Part><PartNumber>\(i + 1)</PartNumber><ETag>\(XMLElement.escape(etag))</ETag></Part>"
            }
            body += "</CompleteMultipartUpload>"
            let r: HTTPResponseCollected
            do throws(StorageError) {
                r = try await client.send(.POST, key: key, query: [("uploadId", uploadID)],
                                          headers: ifAbsent ? [("if-none-match", "*"), ("content-type", "application/xml")] : [("content-type", "application/xml")],
                                          body: ByteBuffer(string: body), name: name)
            } catch where error.code == .notFound {
                // NoSuchUpload after a retry: the first CompleteMultipartUpload went through but its
                // answer was lost. Accept only if the object now carries exactly our parts' ETag.
                if try await hasMultipartETag(name, data: data, partSize: partSize) { return }
                throw error
            }
            // CompleteMultipartUpload can fail inside a 200 answer.
            if let done = try? XMLElement.parse(r.bodyBytes), done.name == "Error" {
                let code = done["Code"] ?? "unknown"
                let transient = ["InternalError", "SlowDown", "ServiceUnavailable"].contains(code)
                throw StorageError(transient ? .transient : .permanent, name: name, message: "S3 could not complete the upload of \(name) (\(code))")
            }
        } catch {
            // Leave no half-uploaded parts behind (they are billed and invisible to listings).
            _ = try? await client.send(.DELETE, key: key, query: [("uploadId", uploadID)], name: name,
                                       accept: { (200..<300).contains($0.code) || $0 == .notFound })
            throw error
        }
    }

    /// Whether `name` is the multipart object made of `data` in parts of `partSize`: S3's ETag for
    /// it is MD5(MD5(part 1) ‖ … ‖ MD5(part n)) in hex, then `-n`.
    private func hasMultipartETag(_ name: String, data: Data, partSize: Int) async throws(StorageError) -> Bool {
        let r = try await client.send(.HEAD, key: client.key(name), name: name,
                                      accept: { (200..<300).contains($0.code) || $0 == .notFound })
        guard r.status == .ok, let etag = r.headers.first(name: "etag") else { return false }
        var digests = Data()
        var count = 0
        var start = 0
        while start < data.count {
            let end = min(start + partSize, data.count)
            digests.append(contentsOf: Insecure.MD5.hash(data: data[data.startIndex + start ..< data.startIndex + end]))
            start = end
            count += 1
        }
        let expected = Array(Insecure.MD5.hash(data: digests)).hexString + "-\(count)"
        return etag.trimmingQuotes() == expected
    }

    private func uploadParts(key: String, name: String, uploadID: String, data: Data,
                             partSize: Int, partCount: Int) async throws(StorageError) -> [String] {
        let client = self.client
        let result: Result<[String], StorageError> = await withTaskGroup(of: (Int, Result<String, StorageError>).self) { group in
            var etags = [String](repeating: "", count: partCount)
            var next = 0
            var failure: StorageError?
            // Keep a bounded number of parts in flight; the client's gate bounds the requests too.
            let inFlight = max(1, min(configuration.options.maxConcurrentRequests, 4))
            func addPart(_ index: Int) {
                let lower = index * partSize
                let upper = min(lower + partSize, data.count)
                let slice = data[data.startIndex + lower ..< data.startIndex + upper]
                group.addTask {
                    do throws(StorageError) {
                        let r = try await client.send(.PUT, key: key, query: [("partNumber", "\(index + 1)"), ("uploadId", uploadID)],
                                                      body: ByteBuffer(bytes: slice), name: name)
                        guard let etag = r.headers.first(name: "etag") else {
                            return (index, .failure(StorageError(.transient, name: name, message: "S3 sent no ETag for part \(index + 1) of \(name)")))
                        }
                        return (index, .success(etag))
                    } catch {
                        return (index, .failure(error))
                    }
                }
            }
            while next < min(inFlight, partCount) { addPart(next); next += 1 }
            while let (index, outcome) = await group.next() {
                switch outcome {
                case .success(let etag):
                    etags[index] = etag
                    if failure == nil && next < partCount { addPart(next); next += 1 }
                case .failure(let e):
                    if failure == nil { failure = e; group.cancelAll() }
                }
            }
            if let failure { return .failure(failure) }
            return .success(etags)
        }
        return try result.get()
    }

    private func check(_ name: String) throws(StorageError) {
        guard ObjectName.isValid(name) else { throw StorageError.invalidName(name) }
    }
}

extension StorageLocation {
    /// Opens a repository from a folder path, a `file://` URL or an `s3://BUCKET/PREFIX` URL.
    /// - Parameters:
    ///   - environment: where S3 settings and credentials come from (see ``S3Configuration/resolve(url:environment:)``).
    ///   - create: for local folders, create the folder when missing.
    public static func open(_ urlOrPath: String, environment: [String: String],
                            create: Bool = false) throws(StorageError) -> any Storage {
        if urlOrPath.hasPrefix("s3://") {
            return try S3Storage.open(url: urlOrPath, environment: environment)
        }
        return try open(urlOrPath, create: create)
    }
}

extension String {
    func trimmingQuotes() -> String {
        var s = Substring(self)
        if s.hasPrefix("\"") { s = s.dropFirst() }
        if s.hasSuffix("\"") { s = s.dropLast() }
        return String(s)
    }
}

extension S3Storage {
    /// A byte count a server sent: decimal digits only (no sign), at most 18 of them (so it fits an Int).
    static func byteCount(_ text: String) -> Int? {
        let bytes = Array(text.utf8)
        guard (1...18).contains(bytes.count), bytes.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else { return nil }
        return Int(text)
    }

    /// A server-sent value quoted in an error message: printable ASCII, at most 40 characters.
    static func shown(_ value: String?) -> String {
        guard let value else { return "missing" }
        let printable = value.unicodeScalars.prefix(40).map { $0.isASCII && $0.value >= 0x20 && $0.value < 0x7F ? Character($0) : "?" }
        return "\"" + String(printable) + (value.unicodeScalars.count > 40 ? "…" : "") + "\""
    }
}
