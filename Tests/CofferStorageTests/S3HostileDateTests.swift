@testable import CofferS3
import CofferStorage
import Foundation
import Testing

/// Issue 11, problem 9: an S3 endpoint that sends a `Last-Modified` with a huge year made the
/// calendar arithmetic overflow (a trap: the process died with status 132, on every backup, since
/// `stat` reads that header). Now a date the client cannot read is a clear storage error.
@Suite("S3 dates and sizes from a hostile endpoint")
struct S3HostileDateTests {
    static let hugeYear = "Sun, 29 Nov 99999999999999999 02:05:28 GMT"

    @Test("the parsers refuse out-of-range and malformed dates instead of trapping")
    func parsers() {
        // Before the fix the first one overflowed Int in days_from_civil and trapped.
        #expect(S3Date.parseHTTP(Self.hugeYear) == nil)
        #expect(S3Date.parseHTTP("Sun, 29 Nov 9223372036854775807 02:05:28 GMT") == nil)
        #expect(S3Date.parseHTTP("Sun, 29 Nov 2026 02:05:9223372036854775807 GMT") == nil)
        #expect(S3Date.parseHTTP("Sun, 99999999999999999 Nov 2026 02:05:28 GMT") == nil)
        #expect(S3Date.parseHTTP("Sun, 31 Feb 2026 02:05:28 GMT") == nil, "no 31 February")
        #expect(S3Date.parseHTTP("Sun, 29 Nov 2026 24:00:00 GMT") == nil)
        #expect(S3Date.parseHTTP("Sun, 29 Nov +026 02:05:28 GMT") == nil, "a sign is not a digit")
        #expect(S3Date.parseHTTP("Sun, 29 Nov 2026 02:05:28 PST") == nil, "only GMT")
        #expect(S3Date.parseISO8601("2026-13-29T02:05:28.000Z") == nil)
        #expect(S3Date.parseISO8601("+999-11-29T02:05:28.000Z") == nil)
        #expect(S3Date.parseISO8601("2026-11-29T02:05:28.000") == nil, "no zone")
        #expect(S3Date.parseISO8601("2026-11-29 02:05:28.000Z") == nil)
        // Valid dates still read as before, and an offset is applied rather than ignored.
        #expect(S3Date.parseHTTP("Sun, 29 Nov 2026 02:05:28 GMT")?.timeIntervalSince1970 == 1_795_917_928)
        #expect(S3Date.parseHTTP("Tue, 29 Feb 2028 00:00:00 GMT") != nil)
        #expect(S3Date.parseISO8601("2026-11-29T02:05:28.250Z")?.timeIntervalSince1970 == 1_795_917_928.25)
        #expect(S3Date.parseISO8601("2026-11-29T03:05:28+01:00")?.timeIntervalSince1970 == 1_795_917_928)
        #expect(S3Date.parseISO8601("9999-12-31T23:59:59Z") != nil)
    }

    @Test("sizes: digits only, no sign, no overflow")
    func sizes() {
        #expect(S3Storage.byteCount("12") == 12)
        #expect(S3Storage.byteCount("0") == 0)
        #expect(S3Storage.byteCount("-5") == nil)
        #expect(S3Storage.byteCount("+5") == nil)
        #expect(S3Storage.byteCount("99999999999999999999") == nil)
        #expect(S3Storage.byteCount("") == nil)
    }

    @Test("XML nested past the depth limit is refused (its release would otherwise recurse a million deep)")
    func deepXML() {
        let depth = 1_000_000
        let doc = Array(String(repeating: "<a>", count: depth).utf8) + Array(String(repeating: "</a>", count: depth).utf8)
        #expect(throws: XMLElement.ParseError.self) { _ = try XMLElement.parse(doc) }
        let ok = Array((String(repeating: "<a>", count: XMLElement.maximumDepth) + String(repeating: "</a>", count: XMLElement.maximumDepth)).utf8)
        #expect(throws: Never.self) { _ = try XMLElement.parse(ok) }
    }

    @Test("stat and list through a proxy that rewrites moto's dates: clear errors, nothing guessed")
    func throughRewritingProxy() async throws {
        try await MotoServer.with { moto in
            try await S3Storage.with(moto.configuration(bucket: "coffer-dates", prefix: "repo")) { storage in
                try await storage.createBucket()
                try await storage.put("config", data: Data("x".utf8))
            }
            // The header: stat.
            let proxy = try await FaultProxy.start(upstreamPort: moto.port, rate: 0, forceEachKind: false, lastModified: Self.hugeYear)
            defer { proxy.stop() }
            try await S3Storage.with(moto.configuration(bucket: "coffer-dates", prefix: "repo", endpoint: proxy.endpoint)) { storage in
                let error = await storageError { _ = try await storage.stat("config") }
                #expect(error?.code == .permanent, "\(String(describing: error))")
                #expect(error?.message.contains("no valid Last-Modified for config") == true, "\(String(describing: error))")
                #expect(error?.message.contains("99999999999999999") == true, "the message quotes what the server sent")
            }
            #expect((proxy.counts()["rewrote"] ?? 0) >= 1, "the proxy really rewrote an answer")

            // The listing: a LastModified the client cannot read is an error, not 1970 (which
            // would make prune take a fresh pack for an old orphan).
            let listing = try await FaultProxy.start(upstreamPort: moto.port, rate: 0, forceEachKind: false,
                                                     listingLastModified: "99999-11-29T02:05:28.000Z")
            defer { listing.stop() }
            try await S3Storage.with(moto.configuration(bucket: "coffer-dates", prefix: "repo", endpoint: listing.endpoint)) { storage in
                let error = await storageError { _ = try await storage.list(prefix: "") }
                #expect(error?.code == .permanent, "\(String(describing: error))")
                #expect(error?.message.contains("without a valid LastModified") == true, "\(String(describing: error))")
            }
            // Straight to moto the same calls work.
            let (info, names) = try await S3Storage.with(moto.configuration(bucket: "coffer-dates", prefix: "repo")) { storage in
                (try await storage.stat("config"), try await storage.list(prefix: "").map(\.name))
            }
            #expect(info?.size == 1)
            #expect(names == ["config"])
        }
    }

    @Test("coffer backup against an endpoint with a huge Last-Modified exits with a clear error, not status 132")
    func backupThroughRewritingProxy() async throws {
        try await MotoServer.with { moto in
            try await S3Storage.with(moto.configuration(bucket: "coffer-hugedate")) { try await $0.createBucket() }
            let direct = try CofferWorld(moto: moto, bucket: "coffer-hugedate", prefix: "repo")
            defer { direct.remove() }
            try direct.coffer(["init", "--pack-size", "4"])
            try FileManager.default.createDirectory(at: direct.data, withIntermediateDirectories: true)
            try Data("hello".utf8).write(to: direct.data.appendingPathComponent("a.txt"))

            let proxy = try await FaultProxy.start(upstreamPort: moto.port, rate: 0, forceEachKind: false, lastModified: Self.hugeYear)
            defer { proxy.stop() }
            var environment = direct.environment
            environment["AWS_ENDPOINT_URL"] = proxy.endpoint
            let p = Process()
            p.executableURL = CofferWorld.binary
            p.arguments = ["backup", "--quiet", direct.data.path]
            p.environment = environment
            let errPath = NSTemporaryDirectory() + "coffer-hugedate-\(UUID().uuidString)"
            _ = FileManager.default.createFile(atPath: errPath, contents: nil)
            defer { try? FileManager.default.removeItem(atPath: errPath) }
            let err = try FileHandle(forWritingTo: URL(fileURLWithPath: errPath))
            p.standardOutput = FileHandle.nullDevice
            p.standardError = err
            p.standardInput = FileHandle.nullDevice
            try p.run()
            p.waitUntilExit()
            try err.close()
            let stderr = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
            #expect(p.terminationReason == .exit, "coffer was killed by signal \(p.terminationStatus) (132 = the old trap): \(stderr)")
            #expect(p.terminationStatus != 0, "the backup cannot succeed without the storage's clock")
            #expect(stderr.contains("Last-Modified"), "the error names the header: \(stderr)")
            #expect((proxy.counts()["rewrote"] ?? 0) >= 1)
        }
    }
}
