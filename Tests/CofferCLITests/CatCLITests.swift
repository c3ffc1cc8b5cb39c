import Foundation
import Testing

/// `coffer cat`: each kind of object decrypted to JSON, following the links from a snapshot down to
/// a file's bytes; the key never appears.
@Suite struct CatCLITests {
    @Test func catFollowsSnapshotToTreeToBlob() async throws {
        let box = try Sandbox()
        let data = box.path("data")
        try Fixtures.makeTree(at: data)
        let digits = try await box.initRepository()
        try await box.backupJSON([data.path])
        var outputs: [String] = []
        func cat(_ args: [String]) async throws -> [String: Any] {
            let r = try await box.ok(["cat"] + args)
            outputs.append(r.stdout)
            return try #require(try r.json() as? [String: Any], "cat \(args): \(r)")
        }

        let config = try await cat(["config"])
        #expect((config["repository_id"] as? String)?.count == 32)
        #expect(config["file_chunk_size"] as? Int == 1 << 20)

        let snap = try await cat(["snapshot", "latest"])
        #expect(snap["id"] as? String == (try await box.snapshotIDs()).last)
        let root = try #require(snap["root"] as? String)
        let top = try await cat(["tree", root])
        let dataDir = try #require((top["nodes"] as? [[String: Any]])?.first { $0["name"] as? String == "data" })
        let dataTree = try await cat(["tree", try #require(dataDir["subtree"] as? String)])
        let spaceDir = try #require((dataTree["nodes"] as? [[String: Any]])?.first { $0["name"] as? String == "sp ace" })
        let spaceTree = try await cat(["tree", try #require(spaceDir["subtree"] as? String)])
        let file = try #require((spaceTree["nodes"] as? [[String: Any]])?.first)
        #expect(file["name"] as? String == "naïve ✓.txt")
        let blobID = try #require((file["content"] as? [String])?.first)
        let blob = try await cat(["blob", blobID])
        #expect(blob["type"] as? String == "data")
        let b64 = try #require(blob["data_base64"] as? String)
        let bytes = try #require(Data(base64Encoded: b64))
        #expect(String(decoding: bytes, as: UTF8.self) == "unicode name\n")
        let packName = try #require(blob["pack"] as? String)

        let pack = try await cat(["pack", String(packName.split(separator: "/").last!)])
        #expect((pack["blobs"] as? [[String: Any]])?.contains { $0["id"] as? String == blobID } == true)
        let indexName = try #require(box.objects("index").first)
        let index = try await cat(["index", String(indexName.split(separator: "/").last!)])
        let packs = try #require(index["packs"] as? [[String: Any]])
        #expect(packs.contains { $0["id"] as? String == String(packName.split(separator: "/").last!) })

        // No output carries the key, in any spelling.
        for o in outputs { #expect(!o.lowercased().contains(digits.prefix(16).lowercased())) }
        // Bad requests are usage errors with a clear word.
        let bad = try await box.run(["cat", "frobs"])
        #expect(bad.status == 64 && bad.stderr.contains("config, snapshot"), "\(bad)")
        let short = try await box.run(["cat", "blob", "abcd"])
        #expect(short.status != 0 && short.stderr.contains("64 hex digits"), "\(short)")
    }
}
