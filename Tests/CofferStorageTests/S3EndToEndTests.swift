import CofferCore
import CofferS3
import CofferStorage
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The real `coffer` binary against a real S3-compatible server (moto, signatures checked):
/// init, backup, day-2 backup, restore and `check --read-data` through `--repo s3://BUCKET/PREFIX`,
/// with endpoint and credentials from the standard AWS variables, as a user would run it. The
/// tests live here, beside `MotoServer` and `FaultProxy`, and run the binary that
/// `swift build` put at `.build/debug/coffer`.
@Suite(.serialized) struct S3EndToEndTests {
    @Test("init, backup, day-2 backup, restore and check --read-data through s3://, then the aws CLI reads the repository")
    func endToEnd() async throws {
        try await MotoServer.with { moto in
            let world = try CofferWorld(moto: moto, bucket: "coffer-e2e", prefix: "phone/backups")
            defer { world.remove() }
            try await S3Storage.with(moto.configuration(bucket: "coffer-e2e")) { try await $0.createBucket() }

            // Packs of 8 MiB over a 5 MiB multipart threshold (URL option multipart-mib): the
            // binary's larger packs go up as multipart uploads of two parts.
            try world.coffer(["init", "--pack-size", "8"])
            try await ChatData.make(at: world.data, messages: 20_000, mediaMiB: 26, seed: 1)
            let day1Digest = try await ChatData.databaseDigest(world.data.appendingPathComponent("Databases/msgstore.db"))
            let first = try await world.backup()
            #expect(first["partial"] as? Bool == false)
            #expect((first["files_new"] as? Int ?? 0) >= 5, "\(first)")

            // Day 2: the database changed (new and edited messages), new media arrived.
            try await ChatData.mutate(at: world.data, seed: 2)
            let second = try await world.backup()
            #expect(second["parent_id"] as? String == first["snapshot_id"] as? String)
            #expect((second["files_new"] as? Int ?? 0) >= 2, "the new media and anything else new: \(second)")
            #expect((second["files_unchanged"] as? Int ?? 0) >= 4, "the old media was not read again: \(second)")
            // Old media is deduplicated: day 2 stores far less than day 1.
            #expect((second["bytes_stored"] as? Int ?? .max) < (first["bytes_stored"] as? Int ?? 0) / 2, "\(first)\n\(second)")

            // The repository holds nothing outside its prefix, and only Coffer's object kinds.
            let names = try await world.storage { try await $0.list(prefix: "") }.map(\.name)
            #expect(names.contains("config"))
            #expect(names.contains { $0.hasPrefix("data/") })
            #expect(names.contains { $0.hasPrefix("snapshots/") })

            // Restore the latest snapshot: media byte-identical, database by content.
            let restored = world.root.appendingPathComponent("restore-latest")
            try world.coffer(["restore", "latest", "--target", restored.path, "--quiet"])
            try await ChatData.expectSame(world.data, restored.appendingPathComponent("data"))

            // The first snapshot still restores day 1's database, without day 2's media.
            let old = world.root.appendingPathComponent("restore-day1")
            try world.coffer(["restore", try #require(first["snapshot_id"] as? String), "--target", old.path, "--quiet"])
            await #expect(try ChatData.databaseDigest(old.appendingPathComponent("data/Databases/msgstore.db")) == day1Digest)
            #expect(!FileManager.default.fileExists(atPath: old.appendingPathComponent("data/Media/Images/IMG-day2-0.jpg").path))

            let check = try await world.checkJSON()
            #expect(check["clean"] as? Bool == true, "\(check)")
            #expect((check["blobs_verified"] as? Int ?? 0) > 0, "\(check)")
            #expect((check["snapshots_checked"] as? Int) == 2, "\(check)")

            try await interop(world: world, moto: moto)
        }
    }

    /// The `aws` CLI lists exactly the repository's objects and fetches its largest pack
    /// byte-identical to what `S3Storage.get` returns.
    func interop(world: CofferWorld, moto: MotoServer) async throws {
        guard let aws = MotoServer.findExecutable("aws") else {
            Issue.record("the aws CLI is not on PATH: install it with `pip install awscli`")
            return
        }
        let objects = try await world.storage { try await $0.list(prefix: "") }
        let listing = try capture(aws, ["--endpoint-url", moto.endpoint, "s3", "ls", "--recursive", "s3://\(world.bucket)/\(world.prefix)/"],
                                  world.environment)
        var listed: [String: Int] = [:]
        for line in listing.split(separator: "\n") {
            // "2026-01-01 00:00:00   12345 phone/backups/data/ab/abcdef..."
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 4, let size = Int(fields[2]) else { continue }
            listed[fields[3...].joined(separator: " ")] = size
        }
        let expected = Dictionary(uniqueKeysWithValues: objects.map { ("\(world.prefix)/\($0.name)", $0.size) })
        #expect(listed == expected, "aws s3 ls lists the same objects with the same sizes as S3Storage.list:\n\(listing)")

        let pack = try #require(objects.filter { $0.name.hasPrefix("data/") }.max { $0.size < $1.size })
        #expect(pack.size > 5 << 20, "the largest pack went up as a multipart upload: \(pack)")
        let local = world.root.appendingPathComponent("fetched-pack").path
        _ = try capture(aws, ["--endpoint-url", moto.endpoint, "s3", "cp", "s3://\(world.bucket)/\(world.prefix)/\(pack.name)", local],
                        world.environment)
        let viaCLI = try #require(FileManager.default.contents(atPath: local))
        let viaStorage = try await world.storage { try await $0.get(pack.name) }
        #expect(viaCLI.count == pack.size)
        #expect(viaCLI == viaStorage, "aws s3 cp and S3Storage.get return the same bytes for \(pack.name)")

        let config = world.root.appendingPathComponent("fetched-config").path
        _ = try capture(aws, ["--endpoint-url", moto.endpoint, "s3", "cp", "s3://\(world.bucket)/\(world.prefix)/config", config], world.environment)
        #expect(FileManager.default.contents(atPath: config) == (try await world.storage { try await $0.get("config") }))
    }

    @Test("a backup, a day-2 backup and a restore through a proxy that resets, stalls and answers 500/503 complete and verify")
    func throughFaultProxy() async throws {
        try await MotoServer.with { moto in
            try await S3Storage.with(moto.configuration(bucket: "coffer-faulty")) { try await $0.createBucket() }
            let proxy = try await FaultProxy.start(upstreamPort: moto.port, rate: 0.15, stallSeconds: 3, seed: 11)
            defer { proxy.stop() }
            let world = try CofferWorld(moto: moto, bucket: "coffer-faulty", prefix: "repo", endpoint: proxy.endpoint)
            defer { world.remove() }

            try world.coffer(["init", "--pack-size", "4"])
            try await ChatData.make(at: world.data, messages: 10_000, mediaMiB: 14, seed: 3)
            let first = try await world.backup()
            #expect(first["partial"] as? Bool == false)
            try await ChatData.mutate(at: world.data, seed: 4)
            _ = try await world.backup()

            let restored = world.root.appendingPathComponent("restore")
            try world.coffer(["restore", "latest", "--target", restored.path, "--quiet"])
            try await ChatData.expectSame(world.data, restored.appendingPathComponent("data"))
            let check = try await world.checkJSON()
            #expect(check["clean"] as? Bool == true, "\(check)")

            let counts = proxy.counts()
            for kind in ["reset", "midreset", "stall", "500", "503"] {
                #expect((counts[kind] ?? 0) >= 1, "the proxy injected \(kind) at least once: \(counts)")
            }
            let faults = counts.filter { $0.key != "pass" }.values.reduce(0, +)
            #expect(faults >= 10, "a real share of requests failed: \(counts)")

            // Straight to moto, past the proxy: the repository the faults produced is clean too.
            let direct = try CofferWorld(moto: moto, bucket: "coffer-faulty", prefix: "repo", home: world.home)
            defer { direct.remove(keepHome: true) }
            let directCheck = try await direct.checkJSON()
            #expect(directCheck["clean"] as? Bool == true, "\(directCheck)")
        }
    }
}

extension S3EndToEndTests {
    @Test("init without --pack-size: 4 MiB packs on S3 (fewer requests), 2 MiB in a folder, as each config records")
    func defaultPackSizeFollowsTheStorage() async throws {
        try await MotoServer.with { moto in
            let world = try CofferWorld(moto: moto, bucket: "coffer-packsize", prefix: "phone")
            defer { world.remove() }
            try await S3Storage.with(moto.configuration(bucket: "coffer-packsize")) { try await $0.createBucket() }
            let key = BackupKey()
            var env = world.environment
            env["COFFER_KEY"] = key.digits
            _ = try capture(CofferWorld.binary.path, ["init"], env)
            let onS3 = try await world.storage { try await $0.get("config") }
            #expect(try RepositoryConfig.open(onS3, key: key).config.parameters.targetPackSize == 4 << 20)
            let folder = world.root.appendingPathComponent("folder")
            _ = try capture(CofferWorld.binary.path, ["init", "--repo", folder.path], env)
            let inFolder = try Data(contentsOf: folder.appendingPathComponent("config"))
            #expect(try RepositoryConfig.open(inFolder, key: key).config.parameters.targetPackSize == 2 << 20)
        }
    }
}

/// One user's world for the binary: a COFFER_HOME, a data folder, AWS variables pointing at moto
/// (or a proxy in front of it) and nothing from the developer's own ~/.aws.
struct CofferWorld {
    let root: URL
    let home: URL
    let data: URL
    let bucket: String
    let prefix: String
    let environment: [String: String]
    let configuration: S3Configuration

    static var binary: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent(".build/debug/coffer")
    }

    struct BinaryMissing: Error, CustomStringConvertible {
        var description: String { "\(CofferWorld.binary.path) does not exist: build it first with `swift build` (these tests run the real binary)" }
    }

    init(moto: MotoServer, bucket: String, prefix: String, endpoint: String? = nil, home: URL? = nil) throws {
        guard FileManager.default.isExecutableFile(atPath: Self.binary.path) else { throw BinaryMissing() }
        root = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-s3e2e-\(UUID().uuidString.prefix(8))")
        self.home = home ?? root.appendingPathComponent("home")
        data = root.appendingPathComponent("data")
        try FileManager.default.createDirectory(at: self.home, withIntermediateDirectories: true)
        self.bucket = bucket
        self.prefix = prefix
        var env = ProcessInfo.processInfo.environment
        for key in env.keys where key.hasPrefix("AWS_") || key.hasPrefix("COFFER_") { env[key] = nil }
        env["COFFER_HOME"] = self.home.path
        env["COFFER_REPO"] = "s3://\(bucket)/\(prefix)?multipart-mib=5"
        env["AWS_ENDPOINT_URL"] = endpoint ?? moto.endpoint
        env["AWS_REGION"] = "us-east-1"
        env["AWS_DEFAULT_REGION"] = "us-east-1"
        env["AWS_ACCESS_KEY_ID"] = moto.credentials.accessKeyID
        env["AWS_SECRET_ACCESS_KEY"] = moto.credentials.secretAccessKey
        env["AWS_CONFIG_FILE"] = root.appendingPathComponent("no-aws-config").path
        env["AWS_SHARED_CREDENTIALS_FILE"] = root.appendingPathComponent("no-aws-credentials").path
        environment = env
        configuration = moto.configuration(bucket: bucket, prefix: prefix)
    }

    /// Runs `coffer ARGS` (the repository comes from COFFER_REPO) and requires success.
    @discardableResult
    func coffer(_ args: [String]) throws -> String {
        try capture(Self.binary.path, args, environment)
    }

    /// `coffer backup --json DATA`.
    func backup() async throws -> [String: Any] {
        let out = try await runSplit(Self.binary.path, ["backup", "--json", "--quiet", data.path], environment)
        return try #require(try JSONSerialization.jsonObject(with: Data((out.split(separator: "\n").last ?? "").utf8)) as? [String: Any], "backup --json printed: \(out)")
    }

    /// `coffer check --read-data --json` (exit status ignored; the JSON says whether it is clean).
    func checkJSON() async throws -> [String: Any] {
        let out = try await runSplit(Self.binary.path, ["check", "--read-data", "--json"], environment, allowFailure: true)
        return try #require(try JSONSerialization.jsonObject(with: Data((out.split(separator: "\n").last ?? "").utf8)) as? [String: Any], "check --json printed: \(out)")
    }

    /// Runs `body` with an `S3Storage` on the repository, straight to moto.
    func storage<T>(_ body: (S3Storage) async throws -> T) async throws -> T {
        try await S3Storage.with(configuration, body)
    }

    func remove(keepHome: Bool = false) {
        if keepHome {
            try? FileManager.default.removeItem(at: data)
            for name in (try? FileManager.default.contentsOfDirectory(atPath: root.path)) ?? [] where name != "home" {
                try? FileManager.default.removeItem(at: root.appendingPathComponent(name))
            }
        }
        try? FileManager.default.removeItem(at: root)
    }
}

/// Runs a command; returns its standard output alone (standard error goes to the failure message).
func runSplit(_ executable: String, _ arguments: [String], _ environment: [String: String], allowFailure: Bool = false) async throws -> String {
    try await offPool { try runSplitBlocking(executable, arguments, environment, allowFailure: allowFailure) }
}

/// ``runSplit(_:_:_:allowFailure:)`` waiting on the calling thread (for scenarios that run on a thread of their own).
func runSplitBlocking(_ executable: String, _ arguments: [String], _ environment: [String: String], allowFailure: Bool = false) throws -> String {
    let dir = NSTemporaryDirectory()
    let outPath = dir + "coffer-out-\(UUID().uuidString)"
    let errPath = dir + "coffer-err-\(UUID().uuidString)"
    for p in [outPath, errPath] { _ = FileManager.default.createFile(atPath: p, contents: nil) }
    defer { for p in [outPath, errPath] { try? FileManager.default.removeItem(atPath: p) } }
    let out = try FileHandle(forWritingTo: URL(fileURLWithPath: outPath))
    let err = try FileHandle(forWritingTo: URL(fileURLWithPath: errPath))
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = arguments
    p.environment = environment
    p.standardOutput = out
    p.standardError = err
    p.standardInput = FileHandle.nullDevice
    try p.run()
    p.waitUntilExit()
    try out.close()
    try err.close()
    let stdout = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
    let stderr = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
    struct CommandFailed: Error, CustomStringConvertible { var description: String }
    if p.terminationStatus != 0, !allowFailure {
        throw CommandFailed(description: "\(executable) \(arguments.joined(separator: " ")) failed (\(p.terminationStatus)):\n\(stdout.suffix(2000))\n\(stderr.suffix(2000))")
    }
    return stdout
}

/// A small chat-app folder made with Python's sqlite3 (a real SQLite database in WAL mode) and
/// random, incompressible media; the same shape as the benchmark's dataset, test-sized.
enum ChatData {
    static let makeScript = #"""
    import os, random, sqlite3, sys
    root, messages, media_mib, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    rng = random.Random(seed)
    for sub in ("Databases", "Media/Images", "Media/Video", "Media/Voice Notes"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    db = sqlite3.connect(os.path.join(root, "Databases", "msgstore.db"))
    db.execute("pragma journal_mode=wal")
    db.execute("create table messages(id integer primary key, chat integer, ts integer, body text)")
    db.execute("create index messages_chat on messages(chat, ts)")
    words = "hello see you tomorrow ok thanks where are we meeting call me later".split()
    db.executemany("insert into messages values (?,?,?,?)",
                   [(i, rng.randrange(50), 1600000000 + i, " ".join(rng.choices(words, k=rng.randrange(2, 20)))) for i in range(messages)])
    db.commit()
    db.close()
    # One video over 16 MiB when there is room (chunked across packs), the rest in images and notes.
    left = media_mib << 20
    sizes = []
    if left > 18 << 20:
        sizes.append(("Video", "VID-0.mp4", 17 << 20)); left -= 17 << 20
    n = 0
    while left > 0:
        size = min(left, rng.randrange(200 << 10, 3 << 20))
        folder, name = ("Images", "IMG-%d.jpg" % n) if n % 3 else ("Voice Notes", "PTT-%d.opus" % n)
        sizes.append((folder, name, size)); left -= size; n += 1
    for folder, name, size in sizes:
        with open(os.path.join(root, "Media", folder, name), "wb") as f:
            f.write(rng.randbytes(size))
    """#

    static let mutateScript = #"""
    import os, random, sqlite3, sys
    root, seed = sys.argv[1], int(sys.argv[2])
    rng = random.Random(seed)
    db = sqlite3.connect(os.path.join(root, "Databases", "msgstore.db"))
    top = db.execute("select max(id) from messages").fetchone()[0]
    db.executemany("insert into messages values (?,?,?,?)",
                   [(top + 1 + i, rng.randrange(50), 1700000000 + i, "day two %d" % i) for i in range(2000)])
    db.execute("update messages set body = 'edited' where id % 97 = 0")
    db.execute("delete from messages where id % 211 = 0")
    db.commit()
    db.close()
    for i in range(2):
        with open(os.path.join(root, "Media", "Images", "IMG-day2-%d.jpg" % i), "wb") as f:
            f.write(rng.randbytes(rng.randrange(300 << 10, 2 << 20)))
    """#

    /// Every row of every table, in order, hashed; plus SQLite's integrity check.
    static let digestScript = #"""
    import hashlib, sqlite3, sys
    c = sqlite3.connect(sys.argv[1])
    assert c.execute("pragma integrity_check").fetchone()[0] == "ok", "integrity_check failed"
    h = hashlib.sha256()
    for (name,) in c.execute("select name from sqlite_master where type='table' order by name"):
        h.update(name.encode())
        for row in c.execute('select * from "%s" order by rowid' % name):
            h.update(repr(row).encode())
    print(h.hexdigest(), c.execute("select count(*) from messages").fetchone()[0])
    """#

    static func python(_ script: String, _ args: [String]) async throws -> String {
        let python = MotoServer.findExecutable("python3") ?? "/usr/bin/python3"
        return try await runSplit(python, ["-c", script] + args, ProcessInfo.processInfo.environment)
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    static func make(at root: URL, messages: Int, mediaMiB: Int, seed: Int) async throws {
        _ = try await python(makeScript, [root.path, "\(messages)", "\(mediaMiB)", "\(seed)"])
    }

    static func mutate(at root: URL, seed: Int) async throws {
        _ = try await python(mutateScript, [root.path, "\(seed)"])
    }

    static func databaseDigest(_ url: URL) async throws -> String {
        try await python(digestScript, [url.path])
    }

    /// Media byte-identical, every file present on both sides, the database equal by content
    /// (Coffer stores a consistent copy made through SQLite, not the raw file with its WAL).
    static func expectSame(_ source: URL, _ restored: URL) async throws {
        let fm = FileManager.default
        func files(_ base: URL) -> Set<String> {
            var out = Set<String>()
            guard let e = fm.enumerator(atPath: base.path) else { return out }
            for case let rel as String in e {
                var isDir: ObjCBool = false
                if fm.fileExists(atPath: base.appendingPathComponent(rel).path, isDirectory: &isDir), !isDir.boolValue { out.insert(rel) }
            }
            return out
        }
        let mediaSource = files(source.appendingPathComponent("Media"))
        let mediaRestored = files(restored.appendingPathComponent("Media"))
        #expect(mediaSource == mediaRestored, "the same media files")
        #expect(mediaSource.count >= 4)
        for rel in mediaSource.sorted() {
            let a = fm.contents(atPath: source.appendingPathComponent("Media/\(rel)").path)
            let b = fm.contents(atPath: restored.appendingPathComponent("Media/\(rel)").path)
            #expect(a != nil && a == b, "Media/\(rel) restored byte-identical")
        }
        let db = "Databases/msgstore.db"
        let sourceDigest = try await databaseDigest(source.appendingPathComponent(db))
        let restoredDigest = try await databaseDigest(restored.appendingPathComponent(db))
        #expect(sourceDigest == restoredDigest, "the restored database holds the same rows")
    }
}
