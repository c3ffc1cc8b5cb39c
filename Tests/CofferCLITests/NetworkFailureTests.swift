import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A loopback port that nothing listens on: bound, read back, closed.
func closedLoopbackPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw RunFailed(args: ["socket"], result: RunResult(status: errno, stdout: "", stderr: "", signalled: false)) }
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = 0
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
    }
    guard ok else { throw RunFailed(args: ["bind"], result: RunResult(status: errno, stdout: "", stderr: "", signalled: false)) }
    return Int(UInt16(bigEndian: addr.sin_port))
}

@Suite("S3 endpoint that refuses the connection")
struct S3RefusedEndpointTests {
    @Test("each retry and its backoff on stderr, then a readable message and exit 11 within COFFER_NETWORK_BUDGET")
    func refusedEndpointFailsFastAndSaysSo() async throws {
        let box = try Sandbox()
        let port = try closedLoopbackPort()
        let endpoint = "http://127.0.0.1:\(port)"
        let env = ["COFFER_REPO": "s3://coffer-test/repo", "AWS_ENDPOINT_URL": endpoint, "AWS_REGION": "us-east-1",
                   "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret-never-printed",
                   "COFFER_NETWORK_BUDGET": "2"]
        // The kill is only a backstop for a hang (the old behaviour was ~87 s per request).
        let r = try await box.run(["init"], env: env, killAfter: 300)
        #expect(!r.signalled, "still running after 300 s:\n\(r)")
        #expect(r.status == 11, "\(r)")
        #expect(r.stderr.contains("coffer: S3 endpoint \(endpoint) refused the connection; retry 2 of "), "\(r.stderr)")
        #expect(r.stderr.contains("gave up after") && r.stderr.contains("COFFER_NETWORK_BUDGET"), "\(r.stderr)")
        #expect(r.stderr.contains("check AWS_ENDPOINT_URL"), "\(r.stderr)")
        #expect(!r.stderr.contains("secret-never-printed"))
        // Every line starts with the one prefix (the hint is indented under it).
        for line in r.stderr.split(separator: "\n") { #expect(line.hasPrefix("coffer: ") || line.hasPrefix("  "), "\(line)") }

        // --json: the same failure as one error line at the end, with the exit code.
        let j = try await box.run(["snapshots", "--json"], env: env.merging(["COFFER_KEY": String(repeating: "0", count: 64)]) { $1 }, killAfter: 300)
        #expect(j.status == 11, "\(j)")
        let last = String(j.stderr.split(separator: "\n").last ?? "")
        #expect(last.hasPrefix("{") && last.contains(#""code":11"#) && last.contains(#""message_type":"error""#), "\(j.stderr)")
    }
}

@Suite("a vault realm that refuses the connection", .serialized)
struct RefusedRealmTests {
    @Test("a refused realm fails at once and the others make the quorum (no wait for the timeout)")
    func refusedRealmDoesNotCostTheTimeout() async throws {
        let box = try Sandbox()
        try FileManager.default.createDirectory(at: box.path("data"), withIntermediateDirectories: true)
        try Data("note\n".utf8).write(to: box.path("data/note.txt"))
        let cluster = try RealmClusterProcess(in: box.path("cluster"))
        defer { cluster.stop() }
        let env = ["COFFER_VAULT": cluster.vaultConfig.path, "COFFER_USER": "erin@example.com", "COFFER_PASSWORD": "blue kettle 9"]
        try await box.ok(["init", "--password"], env: env)

        // The same vault with realm 1 on a closed port; a timeout far beyond the kill backstop,
        // so that waiting for it would fail the test.
        var config = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: cluster.vaultConfig)) as? [String: Any])
        var realms = try #require(config["realms"] as? [[String: Any]])
        realms[0]["url"] = "http://127.0.0.1:\(try closedLoopbackPort())"
        config["realms"] = realms
        // Next to vault.json: the development tenant key is found relative to it.
        let broken = cluster.directory.appendingPathComponent("vault-one-refused.json")
        try JSONSerialization.data(withJSONObject: config).write(to: broken)
        let r = try await box.run(["vault", "recover", "--key-out", box.path("k").path, "--timeout", "900"],
                            env: env.merging(["COFFER_VAULT": broken.path]) { $1 }, killAfter: 300)
        #expect(!r.signalled, "waited for the refused realm:\n\(r)")
        #expect(r.status == 0, "\(r)")
        #expect(r.stderr.contains("refused the connection"), "\(r.stderr)")
        #expect(FileManager.default.fileExists(atPath: box.path("k").path))
    }
}
