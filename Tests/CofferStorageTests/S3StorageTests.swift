@testable import CofferS3
import CofferStorage
import CofferTesting
import Foundation
import Testing

/// S3Storage against a real moto server on loopback with signature checking on. Serialized: each
/// test starts its own moto, and two at once would only compete for the two cores.
@Suite("S3Storage on moto", .serialized)
struct S3StorageTests {
    @Test("passes the storage conformance suite (signed requests, pagination, multipart)")
    func conformance() async throws {
        try await MotoServer.with { moto in
            try await S3Storage.with(moto.configuration(bucket: "coffer-test")) { root in
                try await root.createBucket()
                try await root.createBucket()  // idempotent for the owner
                // Something outside the repository prefix, which the repository must never see.
                try await root.put("other/outside", data: Data("x".utf8))
                try await S3Storage.with(moto.configuration(bucket: "coffer-test", prefix: "repos/phone")) { storage in
                    var suite = StorageConformance(storage: storage)
                    // Racing creates: moto 5 checks `If-None-Match: *` and stores the object in two
                    // steps without a lock (moto/s3/responses.py, put_object), so two racing creates
                    // can both win there (seen once in a full run); S3 itself decides atomically.
                    // The sequential checks (a create over an existing object is refused) still run.
                    suite.atomicCreate = false
                    try await suite.runAll()
                }
                #expect(try await root.list(prefix: "").map(\.name) == ["other/outside"],
                        "the repository cleaned up after itself and left the rest of the bucket alone")
            }
        }
    }

    @Test("wrong secret, unknown key, missing bucket and bad names give clear errors without secrets")
    func errors() async throws {
        try await MotoServer.with { moto in
            try await S3Storage.with(moto.configuration(bucket: "coffer-errors")) { storage in
                try await storage.createBucket()
                try await storage.put("config", data: Data("ok".utf8))
            }
            let secret = moto.credentials.secretAccessKey
            var wrongSecret = moto.credentials
            wrongSecret.secretAccessKey = String(secret.reversed())
            try await S3Storage.with(moto.configuration(bucket: "coffer-errors", credentials: wrongSecret)) { storage in
                let error = await storageError { _ = try await storage.get("config") }
                #expect(error?.code == .accessDenied, "a wrong secret key is access denied: \(String(describing: error))")
                #expect(error?.message.contains("SignatureDoesNotMatch") == true)
                #expect(error?.message.contains("AWS_SECRET_ACCESS_KEY") == true, "the message says what to fix")
                #expect(error?.message.contains(secret) == false && error?.message.contains(wrongSecret.secretAccessKey) == false)
                let listError = await storageError { _ = try await storage.list(prefix: "") }
                #expect(listError?.code == .accessDenied)
                let putError = await storageError { try await storage.put("x", data: Data([1])) }
                #expect(putError?.code == .accessDenied)
            }
            // Not retried: exactly one request reaches the server (counted by a pass-through proxy).
            let counter = try await FaultProxy.start(upstreamPort: moto.port, rate: 0, forceEachKind: false)
            defer { counter.stop() }
            try await S3Storage.with(moto.configuration(bucket: "coffer-errors", credentials: wrongSecret, endpoint: counter.endpoint)) { storage in
                let error = await storageError { _ = try await storage.stat("config") }
                #expect(error?.code == .accessDenied)
                #expect(counter.counts() == ["pass": 1], "a 403 is not retried: \(counter.counts())")
            }
            let unknown = AWSCredentials(accessKeyID: "AKIAUNKNOWNUNKNOWN00", secretAccessKey: secret)
            try await S3Storage.with(moto.configuration(bucket: "coffer-errors", credentials: unknown)) { storage in
                let error = await storageError { _ = try await storage.get("config") }
                #expect(error?.code == .accessDenied)
                #expect(error?.message.contains("InvalidAccessKeyId") == true, "\(String(describing: error))")
            }
            try await S3Storage.with(moto.configuration(bucket: "coffer-no-such-bucket")) { storage in
                let error = await storageError { _ = try await storage.list(prefix: "") }
                #expect(error?.code == .missingContainer, "\(String(describing: error))")
                #expect(error?.message.contains("coffer-no-such-bucket") == true)
                let putError = await storageError { try await storage.put("config", data: Data([1])) }
                #expect(putError?.code == .missingContainer)
            }
            // A server that is not there: its own code (no message matching), retried like a
            // transient failure.
            var quick = S3Options()
            quick.maxAttempts = 2
            quick.initialBackoff = .milliseconds(10)
            quick.connectTimeout = .seconds(1)
            let deadPort = try MotoServer.freePort()
            try await S3Storage.with(moto.configuration(bucket: "coffer-errors", endpoint: "http://127.0.0.1:\(deadPort)", options: quick)) { storage in
                let error = await storageError { _ = try await storage.get("config") }
                #expect(error?.code == .connectionRefused, "\(String(describing: error))")
                #expect(error?.isTransient == true)
                #expect(error?.message.contains("gave up after 2 attempts") == true, "\(String(describing: error))")
            }
        }
    }

    @Test("objects written by S3Storage are listed and fetched byte-identical by the aws CLI, and back")
    func interopWithAWSCLI() async throws {
        guard let aws = MotoServer.findExecutable("aws") else {
            Issue.record("the aws CLI is not on PATH: install it with `pip install awscli`")
            return
        }
        try await MotoServer.with { moto in
            try await withTemporaryFolder { dir in
                let objects: [(String, Data)] = [
                    ("config", randomData(321)),
                    ("data/3f/3fa1b2", randomData(1 << 20)),
                    ("data/00/big", randomData(13 << 20)),  // multipart: 3 parts
                    ("keys/empty", Data()),
                ]
                let env = ProcessInfo.processInfo.environment.merging([
                    "AWS_ACCESS_KEY_ID": moto.credentials.accessKeyID,
                    "AWS_SECRET_ACCESS_KEY": moto.credentials.secretAccessKey,
                    "AWS_DEFAULT_REGION": "us-east-1",
                    "AWS_CONFIG_FILE": dir + "/none", "AWS_SHARED_CREDENTIALS_FILE": dir + "/none",
                ]) { $1 }
                try await S3Storage.with(moto.configuration(bucket: "coffer-interop", prefix: "repo")) { storage in
                    try await storage.createBucket()
                    for (name, data) in objects { try await storage.put(name, data: data) }

                    let listing = try capture(aws, ["--endpoint-url", moto.endpoint, "s3", "ls", "--recursive", "s3://coffer-interop/repo/"], env)
                    for (name, data) in objects {
                        #expect(listing.contains(" \(data.count) repo/\(name)"), "aws s3 ls shows repo/\(name) with its size:\n\(listing)")
                    }
                    for (i, (name, data)) in objects.enumerated() {
                        let local = dir + "/download\(i)"
                        _ = try capture(aws, ["--endpoint-url", moto.endpoint, "s3", "cp", "s3://coffer-interop/repo/\(name)", local], env)
                        #expect(FileManager.default.contents(atPath: local) == data, "aws s3 cp fetches \(name) byte-identical")
                    }

                    // The other direction: the CLI uploads, we read.
                    let upload = randomData(7 << 20)
                    try upload.write(to: URL(fileURLWithPath: dir + "/upload"))
                    _ = try capture(aws, ["--endpoint-url", moto.endpoint, "s3", "cp", dir + "/upload", "s3://coffer-interop/repo/index/fromcli"], env)
                    #expect(try await storage.get("index/fromcli") == upload)
                    #expect(try await storage.stat("index/fromcli")?.size == upload.count)
                }
            }
        }
    }

    @Test("the core of the conformance suite passes through a proxy that resets, stalls and answers 500/503")
    func faultInjection() async throws {
        try await MotoServer.with { moto in
            try await S3Storage.with(moto.configuration(bucket: "coffer-faults")) { storage in
                try await storage.createBucket()
            }
            let proxy = try await FaultProxy.start(upstreamPort: moto.port, rate: 0.15, stallSeconds: 4)
            defer { proxy.stop() }
            var options = S3Options()
            options.multipartThreshold = 6 << 20
            options.partSize = 5 << 20
            options.maxAttempts = 12
            options.initialBackoff = .milliseconds(10)
            options.maxBackoff = .milliseconds(300)
            options.readTimeout = .milliseconds(1500)
            options.maxConcurrentRequests = 8
            try await S3Storage.with(moto.configuration(bucket: "coffer-faults", prefix: "repo", endpoint: proxy.endpoint, options: options)) { storage in
                var suite = StorageConformance(storage: storage)
                suite.parallelism = 8
                try await suite.runCore()
            }
            let counts = proxy.counts()
            for kind in ["reset", "midreset", "stall", "500", "503"] {
                #expect((counts[kind] ?? 0) >= 1, "the proxy injected \(kind) at least once: \(counts)")
            }
            #expect((counts["pass"] ?? 0) > 50, "most requests went through: \(counts)")
            // Direct to moto: nothing half-written is left behind.
            try await S3Storage.with(moto.configuration(bucket: "coffer-faults", prefix: "repo")) { storage in
                let left = try await storage.list(prefix: "")
                #expect(left.isEmpty, "every object the suite made was deleted: \(left.map(\.name))")
            }
        }
    }
}

/// The StorageError `body` throws, or nil.
func storageError(_ body: () async throws -> Void) async -> StorageError? {
    do {
        try await body()
        return nil
    } catch let error as StorageError {
        return error
    } catch {
        return StorageError(.permanent, message: "not a StorageError: \(error)")
    }
}

/// Runs a command and returns its standard output; throws when it fails.
func capture(_ executable: String, _ arguments: [String], _ environment: [String: String]) throws -> String {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = arguments
    p.environment = environment
    let outPath = NSTemporaryDirectory() + "coffer-cmd-\(UUID().uuidString)"
    _ = FileManager.default.createFile(atPath: outPath, contents: nil)
    defer { try? FileManager.default.removeItem(atPath: outPath) }
    let out = try FileHandle(forWritingTo: URL(fileURLWithPath: outPath))
    p.standardOutput = out
    p.standardError = out
    try p.run()
    p.waitUntilExit()
    try out.close()
    let text = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
    struct CommandFailed: Error, CustomStringConvertible { var description: String }
    guard p.terminationStatus == 0 else {
        throw CommandFailed(description: "\(executable) \(arguments.joined(separator: " ")) failed (\(p.terminationStatus)): \(text.suffix(1000))")
    }
    return text
}
