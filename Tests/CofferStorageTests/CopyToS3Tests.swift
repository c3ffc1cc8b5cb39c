import CofferS3
import Foundation
import Testing

/// `coffer copy` with the real binary, from a repository in a folder to one on a real
/// S3-compatible server (moto): every snapshot restores byte-identical from both sides, a second
/// copy writes nothing, and a copy after a new backup reads only what is new.
@Suite("coffer copy: folder to S3", .serialized)
struct CopyToS3Tests {
    static func json(_ text: String) throws -> [String: Any] {
        let last = text.split(separator: "\n").last.map(String.init) ?? ""
        return try #require(try JSONSerialization.jsonObject(with: Data(last.utf8)) as? [String: Any], "not JSON: \(text)")
    }

    /// Every regular file and symlink below `a` and `b`, byte for byte.
    static func expectIdentical(_ a: URL, _ b: URL) throws {
        let fm = FileManager.default
        func entries(_ base: URL) -> [String: Data] {
            var out: [String: Data] = [:]
            guard let e = fm.enumerator(atPath: base.path) else { return out }
            for case let rel as String in e {
                let p = base.appendingPathComponent(rel).path
                var isDir: ObjCBool = false
                guard fm.fileExists(atPath: p, isDirectory: &isDir), !isDir.boolValue else { continue }
                out[rel] = fm.contents(atPath: p) ?? Data()
            }
            return out
        }
        let x = entries(a), y = entries(b)
        #expect(!x.isEmpty)
        #expect(Set(x.keys) == Set(y.keys), "the same files: \(Set(x.keys).symmetricDifference(Set(y.keys)))")
        for (rel, data) in x { #expect(y[rel] == data, "\(rel) differs") }
    }

    @Test("copy from a folder to S3: every snapshot restores identically; a second copy writes nothing; the next one reads only what is new")
    func folderToS3() async throws {
        try await MotoServer.with { moto in
            let world = try CofferWorld(moto: moto, bucket: "coffer-copy", prefix: "copied")
            defer { world.remove() }
            try await S3Storage.with(moto.configuration(bucket: "coffer-copy")) { try await $0.createBucket() }
            let folder = world.root.appendingPathComponent("folder-repo").path
            let bin = CofferWorld.binary.path

            // The source: a folder repository with two snapshots (day 1, day 2).
            try world.coffer(["init", "-r", folder])
            try await ChatData.make(at: world.data, messages: 6000, mediaMiB: 6, seed: 7)
            _ = try world.coffer(["backup", "-q", "-r", folder, world.data.path])
            try await ChatData.mutate(at: world.data, seed: 8)
            _ = try world.coffer(["backup", "-q", "-r", folder, world.data.path])

            // The destination on S3 (COFFER_REPO), with its own key.
            try world.coffer(["init"])
            let first = try await Self.json(try runSplit(bin, ["copy", "--from-repo", folder, "--json"], world.environment))
            #expect(first["snapshots_copied"] as? Int == 2, "\(first)")
            #expect(first["snapshots_already_present"] as? Int == 0, "\(first)")
            let firstRead = try #require(first["blobs_read"] as? Int)
            #expect(firstRead > 0 && (first["blobs_written"] as? Int ?? 0) > 0, "\(first)")

            // Every copied snapshot restores byte-identical to the same snapshot restored from the source.
            let pairs = try #require(first["snapshots"] as? [[String: Any]])
            #expect(pairs.count == 2)
            for (n, pair) in pairs.enumerated() {
                let src = try #require(pair["source_id"] as? String), dst = try #require(pair["destination_id"] as? String)
                #expect(src != dst, "re-encrypted under the destination's key, so renamed")
                let a = world.root.appendingPathComponent("from-folder-\(n)"), b = world.root.appendingPathComponent("from-s3-\(n)")
                try world.coffer(["restore", src, "-r", folder, "--target", a.path, "--quiet"])
                try world.coffer(["restore", dst, "--target", b.path, "--quiet"])
                try Self.expectIdentical(a, b)
            }
            // The destination's own listing shows the source's times, hosts and paths.
            let srcList = try await #require(try JSONSerialization.jsonObject(with: Data(try runSplit(bin, ["snapshots", "--json", "-r", folder], world.environment).utf8)) as? [[String: Any]])
            let dstList = try await #require(try JSONSerialization.jsonObject(with: Data(try runSplit(bin, ["snapshots", "--json"], world.environment).utf8)) as? [[String: Any]])
            #expect(srcList.map { "\($0["time"] ?? "")|\($0["hostname"] ?? "")|\($0["paths"] ?? "")" }
                    == dstList.map { "\($0["time"] ?? "")|\($0["hostname"] ?? "")|\($0["paths"] ?? "")" })
            #expect(Set(srcList.compactMap { $0["writer_id"] as? String }).isDisjoint(with: dstList.compactMap { $0["writer_id"] as? String }),
                    "copies form their own chain in the destination")

            // Again: nothing to do, nothing read or written.
            let again = try await Self.json(try runSplit(bin, ["copy", "--from-repo", folder, "--json"], world.environment))
            #expect(again["snapshots_copied"] as? Int == 0 && again["snapshots_already_present"] as? Int == 2, "\(again)")
            #expect(again["blobs_read"] as? Int == 0 && again["blobs_written"] as? Int == 0 && again["bytes_written"] as? Int == 0, "\(again)")

            // Day 3 in the source, then copy `latest` only: it reads what changed, not the whole snapshot.
            try await ChatData.mutate(at: world.data, seed: 9)
            _ = try world.coffer(["backup", "-q", "-r", folder, world.data.path])
            let third = try await Self.json(try runSplit(bin, ["copy", "--from-repo", folder, "--json", "latest"], world.environment))
            #expect(third["snapshots_copied"] as? Int == 1, "\(third)")
            let thirdRead = try #require(third["blobs_read"] as? Int)
            #expect(thirdRead > 0 && thirdRead * 3 < firstRead, "an incremental copy reads the new blobs only: \(thirdRead) of \(firstRead)\n\(third)")
            let latest = try #require((third["snapshots"] as? [[String: Any]])?.first)
            let a = world.root.appendingPathComponent("day3-folder"), b = world.root.appendingPathComponent("day3-s3")
            try world.coffer(["restore", "latest", "-r", folder, "--target", a.path, "--quiet"])
            try world.coffer(["restore", try #require(latest["destination_id"] as? String), "--target", b.path, "--quiet"])
            try Self.expectIdentical(a, b)
            try await ChatData.expectSame(world.data, b.appendingPathComponent("data"))

            let check = try await world.checkJSON()
            #expect(check["clean"] as? Bool == true && check["snapshots_checked"] as? Int == 3, "\(check)")
        }
    }

    @Test("copy refuses a missing source, the same repository twice, and a source it has no key for, with the exit code and a hint")
    func refusals() async throws {
        try await MotoServer.with { moto in
            let world = try CofferWorld(moto: moto, bucket: "coffer-copy-bad", prefix: "x")
            defer { world.remove() }
            let folder = world.root.appendingPathComponent("folder-repo").path
            let bin = CofferWorld.binary.path
            try world.coffer(["init", "-r", folder])
            var env = world.environment
            env["COFFER_REPO"] = folder

            let none = try await runProcessResult(bin, ["copy"], env)
            #expect(none.status == 64 && none.stderr.contains("--from-repo"), "\(none)")
            let same = try await runProcessResult(bin, ["copy", "--from-repo", folder], env)
            #expect(same.status == 64 && same.stderr.contains("same repository"), "\(same)")
            // A source whose key this device does not hold (a fresh COFFER_HOME for the copy).
            let other = world.root.appendingPathComponent("other-repo").path
            try world.coffer(["init", "-r", other])
            env["COFFER_HOME"] = world.root.appendingPathComponent("empty-home").path
            let keyless = try await runProcessResult(bin, ["copy", "--from-repo", other], env)
            #expect(keyless.status == 15 && keyless.stderr.contains("--from-key-file"), "\(keyless)")
        }
    }
}

/// Runs a command to its end: exit status, stdout and stderr.
func runProcessResult(_ executable: String, _ arguments: [String], _ environment: [String: String]) async throws -> (status: Int32, stdout: String, stderr: String) {
    try await offPool { try runProcessResultBlocking(executable, arguments, environment) }
}

func runProcessResultBlocking(_ executable: String, _ arguments: [String], _ environment: [String: String]) throws -> (status: Int32, stdout: String, stderr: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = arguments
    p.environment = environment
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    p.standardInput = FileHandle.nullDevice
    try p.run()
    let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
}
