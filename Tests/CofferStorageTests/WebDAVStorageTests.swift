import CofferStorage
import CofferTesting
@testable import CofferWebDAV
import Crypto
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// WebDAVStorage against real servers on loopback: the conformance suite (racing creates
/// included), authentication, errors, faults, and rclone remotes.
@Suite("WebDAVStorage on real servers", .serialized)
struct WebDAVStorageTests {
    /// The conformance suite with WebDAV-sized counts (many objects are many round trips).
    static func conformance(_ storage: any Storage) -> StorageConformance {
        var suite = StorageConformance(storage: storage)
        suite.manyCount = 600
        suite.parallelism = 8
        return suite
    }

    @Test("passes the storage conformance suite", arguments: WebDAVServer.Kind.allCases)
    func conformance(kind: WebDAVServer.Kind) async throws {
        try await WebDAVServer.with(kind) { server in
            // A file beside the repository folder must survive everything the suite does.
            try Data("not ours".utf8).write(to: server.served.appendingPathComponent("neighbour.txt"))
            try await withStorage(try server.storage("backups/phone")) { storage in
                var suite = Self.conformance(storage)
                suite.atomicCreate = kind.atomicMove
                try await suite.runAll()
            }
            #expect(FileManager.default.contents(atPath: server.served.appendingPathComponent("neighbour.txt").path) == Data("not ours".utf8))
            // No temporaries left behind by completed writes.
            let leftovers = FileManager.default.enumerator(atPath: server.served.path)?.compactMap { $0 as? String }.filter { $0.hasSuffix("~tmp") } ?? []
            #expect(leftovers.isEmpty, "temporary uploads left on \(kind): \(leftovers)")
        }
    }

    /// WsgiDAV's MOVE checks the destination, then `shutil.move`s over it; Apache's mod_dav_fs checks
    /// the destination, then renames: neither is atomic, and two writers can both win
    /// (docs/STORAGE.md). Their rounds are run and the winners counted (printed for the docs), not
    /// held to one; every round must still have a winner and leave one writer's bytes whole.
    @Test("racing creates on one name: exactly one winner in each of 15 rounds of 12 writers (WsgiDAV, Apache: whole objects, winners counted)", arguments: WebDAVServer.Kind.allCases)
    func racingCreates(kind: WebDAVServer.Kind) async throws {
        try await WebDAVServer.with(kind) { server in
            try await withStorage(try server.storage()) { storage in
                var winners: [Int] = []
                defer {
                    if !kind.atomicMove {
                        print("\(kind.rawValue) racing creates: winners per round \(winners), \(winners.reduce(0) { $0 + max(0, $1 - 1) }) extra winners in 15 rounds of 12 writers")
                    }
                }
                for round in 0..<15 {
                    let contenders = (0..<12).map { _ in randomData(2000) }
                    let wins = await StorageConformance.raceCreates(storage, name: "locks/race\(round)", contenders: contenders)
                    winners.append(wins)
                    #expect(wins >= 1, "round \(round) on \(kind): no winner")
                    if kind.atomicMove {
                        #expect(wins == 1, "round \(round) on \(kind): \(wins) winners")
                    }
                    let stored = try await storage.get("locks/race\(round)")
                    #expect(contenders.contains(stored), "the object holds one writer's bytes whole")
                }
                // The winner's bytes are on disk, under the object's own name, and nothing else is.
                let files = try FileManager.default.contentsOfDirectory(atPath: server.served.appendingPathComponent("repo/locks").path)
                #expect(files.sorted() == (0..<15).map { "race\($0)" }.sorted(), "\(files)")
            }
        }
    }

    @Test("the object layout on the server is one file per object, byte for byte")
    func layoutOnDisk() async throws {
        try await WebDAVServer.with(.lighttpd) { server in
            try await withStorage(try server.storage("a/b")) { storage in
                let data = randomData(777)
                try await storage.create("data/3f/3fab", data: data)
                #expect(FileManager.default.contents(atPath: server.served.appendingPathComponent("a/b/data/3f/3fab").path) == data)
                // A foreign file and a stray temporary in the repository are not objects.
                try Data("x".utf8).write(to: server.served.appendingPathComponent("a/b/data/3f/.3fab.1234~tmp"))
                try Data("x".utf8).write(to: server.served.appendingPathComponent("a/b/Notes.TXT"))
                #expect(try await storage.list(prefix: "").map(\.name) == ["data/3f/3fab"])
                // The server's clock: the file's mtime, to the second.
                let info = try #require(try await storage.stat("data/3f/3fab"))
                let attributes = try FileManager.default.attributesOfItem(atPath: server.served.appendingPathComponent("a/b/data/3f/3fab").path)
                let mtime = try #require(attributes[.modificationDate] as? Date)
                #expect(abs(info.modified.timeIntervalSince(mtime)) < 1.01, "\(info.modified) vs \(mtime)")
                #expect(try await storage.stat("data/3f") == nil, "a folder is not an object")
            }
        }
    }

    @Test("wrong or missing credentials give accessDenied naming what to set, never the password",
          arguments: [(WebDAVServer.Kind.rclone, "SHA-256"), (.lighttpd, "SHA-256"), (.lighttpd, "MD5"), (.wsgidav, "MD5")])
    func credentials(kind: WebDAVServer.Kind, digest: String) async throws {
        try await WebDAVServer.with(kind, digest: digest) { server in
            // The right password works (Basic on rclone, Digest with the server's algorithm elsewhere).
            try await withStorage(try server.storage()) { storage in
                try await storage.put("config", data: Data("ok".utf8))
                #expect(try await storage.get("config") == Data("ok".utf8))
            }
            let wrong = "definitely-wrong-\(UUID().uuidString.prefix(6))"
            try await withStorage(try server.storage(password: wrong)) { storage in
                let error = await storageError { _ = try await storage.get("config") }
                #expect(error?.code == .accessDenied, "\(String(describing: error))")
                #expect(error?.message.contains("rejected user \"alice\"") == true, "\(error?.message ?? "")")
                #expect(error?.message.contains(wrong) == false)
                #expect(error.map { "\($0)" }?.contains(wrong) == false)
            }
            var config = try WebDAVConfiguration.resolve(url: server.url(), environment: [:])
            config.options.maxAttempts = 1
            try await withStorage(WebDAVStorage(configuration: config)) { storage in
                let error = await storageError { _ = try await storage.list(prefix: "") }
                #expect(error?.code == .accessDenied)
                #expect(error?.message.contains("COFFER_WEBDAV_USER") == true, "\(error?.message ?? "")")
            }
        }
    }

    @Test("the core of the conformance suite passes through a proxy that resets, stalls and answers 500/503")
    func faultInjection() async throws {
        try await WebDAVServer.with(.lighttpd) { server in
            let proxy = try await FaultProxy.start(upstreamPort: server.port, rate: 0.15, stallSeconds: 3, seed: 5)
            defer { proxy.stop() }
            var options = WebDAVOptions()
            options.maxAttempts = 8
            options.initialBackoff = .milliseconds(20)
            options.readTimeout = .seconds(1)
            var config = try WebDAVConfiguration.resolve(url: "webdav://127.0.0.1:\(proxy.port)/repo", environment: server.credentialEnvironment)
            config.options = options
            try await withStorage(WebDAVStorage(configuration: config)) { storage in
                var suite = Self.conformance(storage)
                suite.largeSize = 6 << 20
                try await suite.runCore()
                // Creates through faults: lost answers to MOVE are recognised as our own write.
                for i in 0..<20 {
                    let data = randomData(3000 + i)
                    try await storage.create("snapshots/s\(i)", data: data)
                    #expect(try await storage.get("snapshots/s\(i)") == data)
                }
            }
            let counts = proxy.counts()
            for kind in ["reset", "midreset", "stall", "500", "503"] {
                #expect((counts[kind] ?? 0) >= 1, "the proxy injected \(kind) at least once: \(counts)")
            }
        }
    }

    @Test("rclone:PATH serves a local folder remote: conformance, then close stops rclone")
    func rcloneRemote() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-rclone-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        var env = ProcessInfo.processInfo.environment
        env["RCLONE_CONFIG"] = dir.appendingPathComponent("rclone.conf").path
        // A named remote defined in the environment, as users of rclone config do.
        env["RCLONE_CONFIG_LOCALDISK_TYPE"] = "local"
        let storage = try await Rclone.open(location: "rclone:localdisk:\(dir.path)/repo", environment: env)
        #expect(storage.location == "rclone:localdisk:\(dir.path)/repo")
        let port = storage.configuration.port
        #expect(canConnect(port), "rclone answers on 127.0.0.1:\(port)")
        do {
            try await Self.conformance(storage).runAll()
            let data = randomData(1234)
            try await storage.create("config", data: data)
            #expect(FileManager.default.contents(atPath: dir.appendingPathComponent("repo/config").path) == data,
                    "the object is a plain file in the remote's folder")
        } catch {
            await storage.close()
            throw error
        }
        await storage.close()
        #expect(!canConnect(port), "close() stopped rclone")
    }

    @Test("rclone missing or too old gives a clear error; on-the-fly remote parameters are not printed")
    func rcloneChecks() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-rclone-fake-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let missing = await storageError { _ = try await Rclone.open(location: "rclone:x:y", environment: ["PATH": dir.path]) }
        #expect(missing?.message.contains("no rclone is on PATH") == true, "\(missing?.message ?? "")")
        let fake = dir.appendingPathComponent("rclone")
        try "#!/bin/sh\necho 'rclone v1.55.2'\n".write(to: fake, atomically: true, encoding: .utf8)
        chmod(fake.path, 0o755)
        let old = await storageError { _ = try await Rclone.open(location: "rclone:x:y", environment: ["PATH": dir.path]) }
        #expect(old?.message.contains("rclone 1.55.2; Coffer needs 1.60.0 or newer") == true, "\(old?.message ?? "")")
        #expect(Rclone.parseVersion("rclone v1.60.1-DEV\n- os/version: debian") == [1, 60, 1])
        #expect(Rclone.parseVersion("rclone v1.75\n") == [1, 75, 0])
        #expect(Rclone.parseVersion("garbage") == nil)
        #expect(Rclone.isAtLeastMinimum([1, 60, 0]) && Rclone.isAtLeastMinimum([2, 0, 0]) && !Rclone.isAtLeastMinimum([1, 59, 9]))
        #expect(Rclone.displayLocation(remote: ":s3,access_key_id=AK,secret_access_key=SK:bucket/repo") == "rclone::s3,…:bucket/repo")
        #expect(Rclone.displayLocation(remote: "gdrive:backups") == "rclone:gdrive:backups")
        let bad = await storageError { _ = try await Rclone.open(location: "rclone:", environment: [:]) }
        #expect(bad?.code == .invalidName)
    }
}

/// Parsing and authentication arithmetic, without a server.
@Suite("WebDAV configuration and HTTP details")
struct WebDAVUnitTests {
    @Test("URLs: host, port, path; credentials never in the URL or the printed location")
    func urls() throws {
        let c = try WebDAVConfiguration.resolve(url: "webdavs://Cloud.Example.org/remote.php/dav/files/al%20ice/Backups",
                                                environment: ["COFFER_WEBDAV_USER": "alice", "COFFER_WEBDAV_PASSWORD": "s3cret"])
        #expect(c.scheme == "https" && c.host == "cloud.example.org" && c.port == 443)
        #expect(c.rootSegments == ["remote.php", "dav", "files", "al ice", "Backups"])
        #expect(c.location == "webdavs://cloud.example.org/remote.php/dav/files/al%20ice/Backups")
        #expect(!"\(c)".contains("s3cret"))
        let plain = try WebDAVConfiguration.resolve(url: "webdav://127.0.0.1:8080/repo", environment: [:])
        #expect(plain.port == 8080 && plain.credentials == nil && plain.location == "webdav://127.0.0.1:8080/repo")
        for bad in ["webdav://alice:pw@host/repo", "webdav://host:99999/x", "webdav:///x", "webdav://host/a/../b", "webdav://host/x?y=1", "webdav://host/%zz"] {
            let error = #expect(throws: StorageError.self) { try WebDAVConfiguration.resolve(url: bad, environment: [:]) }
            #expect(error?.code == .invalidName, "\(bad)")
            #expect(error?.message.contains("pw@") == false)
        }
    }

    @Test("credentials from a netrc file and from a password command")
    func credentialSources() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-netrc-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let netrc = dir.appendingPathComponent("netrc")
        try "machine other.example login bob password nope\nmachine dav.example.org\n  login carol\n  password c4rol\ndefault login anon password anon\n"
            .write(to: netrc, atomically: true, encoding: .utf8)
        let c = try WebDAVConfiguration.resolve(url: "webdav://DAV.example.org/r", environment: ["COFFER_WEBDAV_NETRC": netrc.path])
        #expect(c.credentials?.user == "carol" && c.credentials?.password == "c4rol")
        let d = try WebDAVConfiguration.resolve(url: "webdav://elsewhere/r", environment: ["COFFER_WEBDAV_NETRC": netrc.path])
        #expect(d.credentials?.user == "anon")
        let e = try WebDAVConfiguration.resolve(url: "webdav://h/r", environment: ["COFFER_WEBDAV_USER": "dave", "COFFER_WEBDAV_PASSWORD_COMMAND": "printf 'from-a-command\\nsecond line'"])
        #expect(e.credentials?.user == "dave" && e.credentials?.password == "from-a-command")
        let failing = #expect(throws: StorageError.self) {
            try WebDAVConfiguration.resolve(url: "webdav://h/r", environment: ["COFFER_WEBDAV_USER": "dave", "COFFER_WEBDAV_PASSWORD_COMMAND": "echo leaked; exit 3"])
        }
        #expect(failing?.code == .accessDenied && failing?.message.contains("leaked") == false)
        let noPassword = #expect(throws: StorageError.self) {
            try WebDAVConfiguration.resolve(url: "webdav://h/r", environment: ["COFFER_WEBDAV_USER": "dave", "COFFER_WEBDAV_NETRC": dir.appendingPathComponent("none").path])
        }
        #expect(noPassword?.code == .accessDenied)
    }

    /// RFC 7616 section 3.9.1's example, both algorithms.
    @Test("Digest responses match RFC 7616's worked example (MD5 and SHA-256)")
    func digestVectors() throws {
        let credentials = WebDAVCredentials(user: "Mufasa", password: "Circle of Life")
        for (algorithm, expected) in [("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
                                      ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1")] {
            let header = "Digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", algorithm=\(algorithm), nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\""
            let digest = try #require(DigestAuth.best(of: AuthChallenge.parse(header)))
            let value = digest.authorization(method: "GET", uri: "/dir/index.html", credentials: credentials, nc: 1,
                                             cnonce: "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ")
            #expect(value.contains("response=\"\(expected)\""), "\(algorithm): \(value)")
            #expect(value.contains("nc=00000001") && value.contains("qop=auth") && value.contains("opaque=\"FQhe"))
        }
        // Several challenges in one header: SHA-256 is preferred over MD5; Basic alone gives no digest.
        let both = AuthChallenge.parse("Digest realm=\"r\", nonce=\"n1\", algorithm=MD5, qop=\"auth\", Digest realm=\"r\", nonce=\"n2\", algorithm=SHA-256, qop=\"auth\", Basic realm=\"r\"")
        #expect(both.map(\.scheme) == ["digest", "digest", "basic"])
        #expect(DigestAuth.best(of: both)?.algorithm == .sha256)
        #expect(DigestAuth.best(of: AuthChallenge.parse("Basic realm=\"x\"")) == nil)
        #expect(DigestAuth.best(of: AuthChallenge.parse("Digest realm=\"x\", nonce=\"y\", qop=\"auth-int\"")) == nil)
        _ = AuthChallenge.parse("Digest realm=\"unterminated, nonce=")
        _ = AuthChallenge.parse(",,,==\"\\")
    }

    @Test("HTTP dates: the three forms parse; hostile values give nil, never a trap")
    func httpDates() {
        let expected = Date(timeIntervalSince1970: 784_111_777)
        #expect(HTTPDate.parse("Sun, 06 Nov 1994 08:49:37 GMT") == expected)
        #expect(HTTPDate.parse("Sunday, 06-Nov-94 08:49:37 GMT") == expected)
        #expect(HTTPDate.parse("Sun Nov  6 08:49:37 1994") == expected)
        for hostile in ["", "Sun, 99999999999999999999 Nov 1994 08:49:37 GMT", "Sun, 06 Nov 9223372036854775807 08:49:37 GMT",
                        "Sun, 06 Nov -1994 08:49:37 GMT", "Sun, 06 Nov 1994 99:99:99 GMT", "Sun, 00 Nov 1994 08:49:37 GMT",
                        "Sun, 06 Xyz 1994 08:49:37 GMT", "Sun, 06 Nov 1994 08:49 GMT", "Sun, 06 Nov 1994 08:49:-1 GMT",
                        String(repeating: "9", count: 10_000), "Sunday, 06-Nov-99999999999999999999 08:49:37 GMT"] {
            #expect(HTTPDate.parse(hostile) == nil, "\(hostile.prefix(60))")
        }
    }

    @Test("PROPFIND answers: namespaces, absolute hrefs, encoded names, missing properties")
    func multistatus() throws {
        let body = """
        <?xml version="1.0" encoding="utf-8"?>
        <d:multistatus xmlns:d="DAV:"><d:response><d:href>http://h:1/r/data/</d:href><d:propstat><d:prop>
        <d:resourcetype><d:collection/></d:resourcetype></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>
        <d:response><d:href>/r/data/a%20b</d:href><d:propstat><d:prop><d:getcontentlength> 12 </d:getcontentlength>
        <d:getlastmodified>Sun, 06 Nov 1994 08:49:37 GMT</d:getlastmodified><d:resourcetype/></d:prop>
        <d:status>HTTP/1.1 200 OK</d:status></d:propstat><d:propstat><d:prop><d:getcontentlength>99</d:getcontentlength></d:prop>
        <d:status>HTTP/1.1 404 Not Found</d:status></d:propstat></d:response>
        <d:response><d:href>/r/%zz</d:href></d:response></d:multistatus>
        """
        let resources = try #require(MultiStatus.parse(Array(body.utf8)))
        #expect(resources.count == 2)
        #expect(resources[0] == DAVResource(segments: ["r", "data"], isCollection: true, size: nil, modified: nil))
        #expect(resources[1] == DAVResource(segments: ["r", "data", "a b"], isCollection: false, size: 12,
                                            modified: Date(timeIntervalSince1970: 784_111_777)))
        #expect(MultiStatus.parse(Array("<html>nope</html>".utf8)) == nil)
    }
}
