@testable import CofferS3
import CofferStorage
import Foundation
import NIOCore
import NIOHTTP1
import Testing

/// How S3 error answers become StorageErrors. moto cannot produce some of them (clock skew,
/// throttling, wrong region), so the mapping is checked here on the documented error bodies.
@Suite("S3 error mapping")
struct S3ErrorMappingTests {
    static let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    static let client = S3Client(
        configuration: S3Configuration(bucket: "bucket", prefix: "repo", endpoint: "http://127.0.0.1:1",
                                       credentials: AWSCredentials(accessKeyID: "AKIAIOSFODNN7EXAMPLE", secretAccessKey: secret)),
        logger: .init(label: "test"))

    static func map(_ status: Int, _ code: String?, method: HTTPMethod = .GET, extra: String = "") -> StorageError {
        let body = code.map { "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>\($0)</Code><Message>m</Message>\(extra)<StringToSign>AWS4-HMAC-SHA256 \(secret)</StringToSign></Error>" } ?? ""
        return client.mapError(HTTPResponseCollected(status: HTTPResponseStatus(statusCode: status), headers: [:], body: ByteBuffer(string: body)),
                               method: method, name: "data/00/x")
    }

    @Test("each documented code maps to the code a caller acts on")
    func codes() {
        let cases: [(Int, String?, StorageError.Code)] = [
            (403, "InvalidAccessKeyId", .accessDenied),
            (403, "SignatureDoesNotMatch", .accessDenied),
            (403, "AccessDenied", .accessDenied),
            (400, "ExpiredToken", .accessDenied),
            (404, "NoSuchBucket", .missingContainer),
            (403, "RequestTimeTooSkewed", .clockSkew),
            (404, "NoSuchKey", .notFound),
            (416, "InvalidRange", .rangeNotSatisfiable),
            (412, "PreconditionFailed", .alreadyExists),
            (503, "SlowDown", .transient),
            (500, "InternalError", .transient),
            (400, "RequestTimeout", .transient),
            (429, nil, .transient),
            (502, nil, .transient),
            (403, nil, .accessDenied),
            (404, nil, .notFound),
            (400, "InvalidArgument", .permanent),
            (301, "PermanentRedirect", .permanent),
        ]
        for (status, code, expected) in cases {
            let error = Self.map(status, code)
            #expect(error.code == expected, "HTTP \(status) \(code ?? "-") → \(error.code), expected \(expected)")
            #expect(error.isTransient == (expected == .transient))
            #expect(!error.message.contains(Self.secret), "no secret in: \(error.message)")
            #expect(!error.message.contains("StringToSign"))
        }
        #expect(Self.map(403, "RequestTimeTooSkewed").message.contains("clock"))
        #expect(Self.map(400, "AuthorizationHeaderMalformed", extra: "<Region>eu-west-1</Region>").message.contains("eu-west-1"))
    }

    @Test("path-style and virtual-hosted addresses, keys under the prefix, encoded once")
    func addressing() async {
        let creds = AWSCredentials(accessKeyID: "a", secretAccessKey: "b")
        let path = S3Client(configuration: S3Configuration(bucket: "bucket", prefix: "/backups/phone/", endpoint: "http://127.0.0.1:9000",
                                                           credentials: creds), logger: .init(label: "test"))
        #expect(path.configuration.addressing == .path)
        #expect(path.key("data/00/x") == "backups/phone/data/00/x")
        #expect(path.address(key: path.key("data/00/x")) == ("127.0.0.1:9000", "/bucket/backups/phone/data/00/x"))
        #expect(path.address(key: nil) == ("127.0.0.1:9000", "/bucket"))
        #expect(path.address(key: "a b+c").path == "/bucket/a%20b%2Bc")
        let virtual = S3Client(configuration: S3Configuration(bucket: "bucket", region: "eu-west-1", credentials: creds),
                               logger: .init(label: "test"))
        #expect(virtual.configuration.addressing == .virtualHost)
        #expect(virtual.address(key: "config") == ("bucket.s3.eu-west-1.amazonaws.com", "/config"))
        #expect(virtual.address(key: nil) == ("bucket.s3.eu-west-1.amazonaws.com", "/"))
        await path.shutdown()
        await virtual.shutdown()
    }

    @Test("backoff grows exponentially, is capped, and is jittered")
    func backoff() async {
        var o = S3Options()
        o.initialBackoff = .milliseconds(100)
        o.maxBackoff = .seconds(2)
        let client = S3Client(configuration: S3Configuration(bucket: "bucket", endpoint: "http://127.0.0.1:1",
                                                             credentials: AWSCredentials(accessKeyID: "a", secretAccessKey: "b"), options: o),
                              logger: .init(label: "test"))
        for attempt in 1...12 {
            let bound = min(Duration.milliseconds(100) * (1 << (attempt - 1)), .seconds(2))
            let samples = (0..<50).map { _ in client.backoff(attempt: attempt) }
            #expect(samples.allSatisfy { $0 >= .zero && $0 <= bound }, "attempt \(attempt) within [0, \(bound)]")
            #expect(Set(samples).count > 1, "jittered")
        }
        await client.shutdown()
    }
}
