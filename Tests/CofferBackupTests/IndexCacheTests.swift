import Foundation
import Testing
@testable @_spi(Testing) import CofferBackup
import CofferCore
import CofferStorage

/// The device's index cache (Index/): sorted memory-mapped runs, their filter and buckets, merges,
/// authentication and crash-safe replacement.
@Suite struct IndexCacheTests {
    /// Random packs of random blobs, as index objects would list them.
    static func batch(packs: Int, perPack: Int, rng: inout SyntheticRNG, covering id: ObjectID) -> (RunBatch, [ChunkID: (ObjectID, PackEntry)]) {
        var f = IndexFile()
        var truth: [ChunkID: (ObjectID, PackEntry)] = [:]
        for _ in 0..<packs {
            let pid = rng.objectID()
            var entries: [PackEntry] = []
            for i in 0..<perPack {
                let len = 17 + Int(rng.next() % 60_000)
                let e = PackEntry(index: i, type: i % 7 == 0 ? .tree : .data, id: rng.chunkID(), compression: i % 3 == 0 ? .deflate : .none,
                                  uncompressedLength: len + Int(rng.next() % 1000), offset: i * 70_000, length: len)
                entries.append(e)
                truth[e.id] = (pid, e)
            }
            f.packs.append(IndexedPack(id: pid, salt: Data(rng.bytes(32)), length: perPack * 70_000, entries: entries))
        }
        var b = RunBatch()
        b.add(id, f)
        return (b, truth)
    }

    static func cache(_ scratch: Scratch, key: BackupKey = BackupKey()) -> IndexCache {
        let keys = RepositoryKeys(key: key, repositoryID: Data(repeating: 7, count: 16))
        return IndexCache(deviceStore: DeviceKeyStore(home: URL(fileURLWithPath: scratch.path("home"))), repositoryIDHex: "07070707", keys: keys)
    }

    static func expectMatches(_ run: IndexRun, _ truth: [ChunkID: (ObjectID, PackEntry)], absent: [ChunkID]) -> Int {
        let none = [Bool](repeating: false, count: run.packCount)
        var mismatches = 0
        for (id, (pid, e)) in truth {
            guard let r = run.find(id, excluded: none), run.packID(Int(r.pack)) == pid, r.entry == e else { mismatches += 1; continue }
        }
        #expect(mismatches == 0)
        var falsePositives = 0
        for id in absent {
            #expect(run.find(id, excluded: none) == nil)
            if run.mayContain(IDWords(id)) { falsePositives += 1 }
        }
        return falsePositives
    }

    @Test func lookupsOfPresentAndAbsentIdsMatchADictionaryBeforeAndAfterAMerge() throws {
        let scratch = Scratch()
        let cache = Self.cache(scratch)
        var rng = SyntheticRNG(seed: 99)
        let (b1, t1) = Self.batch(packs: 1500, perPack: 100, rng: &rng, covering: rng.objectID())
        let (b2, t2) = Self.batch(packs: 500, perPack: 100, rng: &rng, covering: rng.objectID())
        let absent = (0..<100_000).map { _ in rng.chunkID() }
        let r1 = try cache.writeRun(b1)
        let r2 = try cache.writeRun(b2)
        #expect(r1.count == 150_000 && r2.count == 50_000)
        let fp1 = Self.expectMatches(r1, t1, absent: absent)
        // The filter answers most absent ids without reading the records (about 0.5% false positives).
        #expect(fp1 < absent.count / 50)
        _ = Self.expectMatches(r2, t2, absent: absent)
        let merged = try cache.merge([r1, r2])
        #expect(merged.count == 200_000)
        // Runs this process wrote and no manifest lists go at once.
        try cache.commit([merged])
        #expect(Set(try FileManager.default.contentsOfDirectory(atPath: cache.dir.path)) == ["manifest", merged.name])
        #expect(Set(merged.covered) == Set(r1.covered + r2.covered))
        let all = t1.merging(t2) { a, _ in a }
        let fp = Self.expectMatches(merged, all, absent: absent)
        #expect(fp < absent.count / 50)
        // Each pack's entries come back whole, in pack order.
        for o in stride(from: 0, to: merged.packCount, by: 97) {
            let p = merged.pack(o)
            #expect(p.entries.count == 100)
            #expect(p.entries.map(\.index) == Array(0..<100))
            #expect(p.entries.allSatisfy { all[$0.id]?.0 == p.id && all[$0.id]?.1 == $0 })
        }
        // Iterating the table streams every id once, like the dictionary it replaces (r2's ids
        // appear again in the merged run: later runs do not repeat them).
        var table = BlobTable(disk: IndexRuns(runs: [r1, merged], excluded: [[Bool](repeating: false, count: r1.packCount),
                                                                              [Bool](repeating: false, count: merged.packCount)]))
        let extra = rng.chunkID()
        let extraEntry = PackEntry(index: 0, type: .data, id: extra, compression: .none, uncompressedLength: 1, offset: 0, length: 17)
        let extraPack = IndexedPack(id: rng.objectID(), salt: Data(count: 32), length: 4096, entries: [extraEntry])
        table.addDelta(extraPack)
        #expect(table[extra] == BlobLocation(pack: extraPack.id, entry: extraEntry), "a delta blob is found")
        var seen = 0
        for (id, loc) in table {
            seen += 1
            if id == extra {
                #expect(loc == BlobLocation(pack: extraPack.id, entry: extraEntry))
                continue
            }
            #expect(all[id]?.0 == loc.pack && all[id]?.1 == loc.entry)
        }
        #expect(seen == all.count + 1)
        // Condemned packs are skipped: their blobs read as absent.
        var ex = [Bool](repeating: false, count: merged.packCount)
        ex[0] = true
        let victim = merged.pack(0).entries[5].id
        #expect(merged.find(victim, excluded: ex) == nil)
    }

    @Test func aDamagedTruncatedOrForeignRunIsRejected() throws {
        let scratch = Scratch()
        let cache = Self.cache(scratch)
        var rng = SyntheticRNG(seed: 5)
        let (b, _) = Self.batch(packs: 50, perPack: 100, rng: &rng, covering: rng.objectID())
        let run = try cache.writeRun(b)
        try cache.commit([run])
        #expect(cache.loadRuns().map(\.name) == [run.name])
        let path = cache.path(run.name)
        let good = try Data(contentsOf: URL(fileURLWithPath: path))

        // One flipped bit anywhere (here in the records) fails the tag; the whole cache goes.
        var bad = good
        bad[good.count / 2] ^= 0x10
        try bad.write(to: URL(fileURLWithPath: path))
        #expect(cache.loadRuns().isEmpty)
        #expect(!FileManager.default.fileExists(atPath: cache.manifestURL.path))

        // Truncated.
        try good.write(to: URL(fileURLWithPath: path))
        try cache.commit([try IndexRun(path: path, name: run.name, tag: run.tag, mac: cache.mac, repositoryID: cache.repositoryID)])
        try good.prefix(good.count - 64).write(to: URL(fileURLWithPath: path))
        #expect(cache.loadRuns().isEmpty)

        // Foreign: the same files under another key (another repository's cache copied here).
        try good.write(to: URL(fileURLWithPath: path))
        try cache.commit([try IndexRun(path: path, name: run.name, tag: run.tag, mac: cache.mac, repositoryID: cache.repositoryID)])
        let other = IndexCache(deviceStore: DeviceKeyStore(home: URL(fileURLWithPath: scratch.path("home"))), repositoryIDHex: "07070707",
                               keys: RepositoryKeys(key: BackupKey(), repositoryID: Data(repeating: 7, count: 16)))
        #expect(other.loadRuns().isEmpty)

        // A damaged manifest.
        try good.write(to: URL(fileURLWithPath: path))
        try cache.commit([try IndexRun(path: path, name: run.name, tag: run.tag, mac: cache.mac, repositoryID: cache.repositoryID)])
        var m = try Data(contentsOf: cache.manifestURL)
        m[10] ^= 1
        try m.write(to: cache.manifestURL)
        #expect(cache.loadRuns().isEmpty)
    }

    @Test func aCrashWhileReplacingTheCacheLeavesTheOldOne() throws {
        let scratch = Scratch()
        let cache = Self.cache(scratch)
        var rng = SyntheticRNG(seed: 6)
        let (b, _) = Self.batch(packs: 20, perPack: 50, rng: &rng, covering: rng.objectID())
        let run = try cache.writeRun(b)
        try cache.commit([run])
        // The states a crash can leave: a half-written temporary run, a complete run not yet in the
        // manifest, a half-written temporary manifest.
        let (b2, _) = Self.batch(packs: 20, perPack: 50, rng: &rng, covering: rng.objectID())
        let run2 = try cache.writeRun(b2)
        FileManager.default.createFile(atPath: cache.path(".tmp-run-0123.cix"), contents: Data(repeating: 1, count: 1000))
        FileManager.default.createFile(atPath: cache.path(".manifest.1234.tmp"), contents: Data(repeating: 2, count: 50))
        let old = Date().timeIntervalSince1970 - 600
        for f in [".tmp-run-0123.cix", ".manifest.1234.tmp", run2.name] { setMtime(cache.path(f), old) }
        // One still being written by another process opening the same repository.
        FileManager.default.createFile(atPath: cache.path(".tmp-run-4567.cix"), contents: Data(repeating: 3, count: 100))
        let loaded = cache.loadRuns()
        #expect(loaded.map(\.name) == [run.name])
        // The next replacement removes what the manifest does not list (unless it is recent).
        try cache.commit(loaded)
        let files = Set(try FileManager.default.contentsOfDirectory(atPath: cache.dir.path))
        #expect(files == ["manifest", run.name, ".tmp-run-4567.cix"])
        #expect(!files.contains(run2.name))
        // Files are private.
        let attrs = try FileManager.default.attributesOfItem(atPath: cache.path(run.name))
        #expect((attrs[.posixPermissions] as? Int) == 0o600)
    }

    /// Through the engine: an unchanged index is opened without reading any index object, new
    /// index objects are merged in as a new run, damage is rebuilt, and backup/restore still work.
    @Test func openingReadsOnlyNewIndexObjectsAndRebuildsADamagedCache() async throws {
        let scratch = Scratch()
        let t = try await TestRepo.make(scratch)
        let src = scratch.path("src")
        write(randomBytes(3 << 20, seed: 1), to: src + "/a.bin", mtime: Date().timeIntervalSince1970 - 600)
        _ = try await t.repo.backup(paths: [src]) as BackupSummary
        _ = try await t.repo.writeSyntheticIndex(blobs: 30_000, blobsPerObject: 10_000, seed: 3)
        let r1 = try await t.reopen()
        let cache = r1.engine.indexCache
        let runs1 = cache.loadRuns()
        #expect(runs1.count == 1)
        // 3 synthetic index objects and the backup's (one, or more when a slow machine made the
        // backup pass its 60 s index checkpoint): the run covers every one of them.
        let indexObjects = try await t.storage.list(prefix: "index/").count
        #expect(indexObjects >= 4)
        #expect(runs1[0].covered.count == indexObjects)
        #expect(runs1[0].count > 30_000)  // the synthetic blobs plus the backup's chunks and trees

        // Unchanged: nothing read. Prove it by damaging an index object the cache covers: the open
        // does not notice (it read nothing); check (which reads every index object) does.
        let objects = try await t.storage.list(prefix: "index/")
        let victim = scratch.path("repo/" + objects[0].name)
        let original = try Data(contentsOf: URL(fileURLWithPath: victim))
        var broken = original
        broken[broken.count - 5] ^= 1
        try broken.write(to: URL(fileURLWithPath: victim))
        let r2 = try await t.reopen()
        #expect(r2.engine.index.withLock { $0.damagedIndexObjects.isEmpty })
        #expect(r2.engine.indexCache.loadRuns().map(\.name) == runs1.map(\.name))
        let report = try await r2.check(readData: false)
        #expect(report.problems.contains { $0.object == objects[0].name })
        try original.write(to: URL(fileURLWithPath: victim))

        // A small change: the next open reads the new index object only and adds a small run.
        write(randomBytes(1 << 20, seed: 2), to: src + "/b.bin", mtime: Date().timeIntervalSince1970 - 600)
        let r3 = try await t.reopen()
        let base = r3.engine.indexCache.loadRuns().map(\.name)
        _ = try await r3.backup(paths: [src]) as BackupSummary
        let r4 = try await t.reopen()
        let runs4 = r4.engine.indexCache.loadRuns()
        #expect(runs4.count == base.count + 1)
        #expect(Set(base).isSubset(of: Set(runs4.map(\.name))))
        let dest = scratch.path("restore")
        let rs = try await r4.restore(snapshot: "latest", target: URL(fileURLWithPath: dest))
        #expect(rs.failures.isEmpty)
        #expect(try Data(contentsOf: URL(fileURLWithPath: dest + "/src/b.bin")) == randomBytes(1 << 20, seed: 2))

        // Damage the big run: the next open rebuilds it from the index objects, with the same answers.
        let big = r4.engine.indexCache.path(runs4.max { $0.count < $1.count }!.name)
        var d = try Data(contentsOf: URL(fileURLWithPath: big))
        d[d.count / 3] ^= 0x40
        try d.write(to: URL(fileURLWithPath: big))
        let r5 = try await t.reopen()
        let runs5 = r5.engine.indexCache.loadRuns()
        #expect(!runs5.isEmpty && Set(runs5.map(\.name)).isDisjoint(with: runs4.map(\.name)))
        let check = try await r5.check(readData: true)
        #expect(check.problems.filter { !$0.object.hasPrefix("data/") }.isEmpty)
        let rs2 = try await r5.restore(snapshot: "latest", target: URL(fileURLWithPath: scratch.path("restore2")))
        #expect(rs2.failures.isEmpty)
    }

    /// A prune that stopped after writing its complete index but before deleting the objects it
    /// supersedes: those are left out, and the cache built without them stays in use.
    @Test func supersededIndexObjectsAreLeftOutAndNotReadAgain() async throws {
        let scratch = Scratch()
        let t = try await TestRepo.make(scratch)
        var rng = SyntheticRNG(seed: 11)
        let (oldBatch, oldTruth) = Self.batch(packs: 3, perPack: 10, rng: &rng, covering: rng.objectID())
        _ = oldBatch
        var oldFile = IndexFile()
        var newFile = IndexFile()
        var byPack: [ObjectID: [PackEntry]] = [:]
        for (_, (p, e)) in oldTruth { byPack[p, default: []].append(e) }
        let packs = byPack.keys.sorted()
        for (k, p) in packs.enumerated() {
            let ip = IndexedPack(id: p, salt: Data(rng.bytes(32)), length: 10 * 70_000, entries: byPack[p]!.sorted { $0.index < $1.index })
            oldFile.packs.append(ip)
            if k > 0 { newFile.packs.append(ip) }  // the first pack was pruned
        }
        let (oldID, _) = try await t.repo.engine.writeSealed(oldFile.encoded(), type: .index) { $0.indexName }
        newFile.supersedes = [oldID]
        _ = try await t.repo.engine.writeSealed(newFile.encoded(), type: .index) { $0.indexName }
        let r1 = try await t.reopen()
        let names = r1.engine.indexCache.loadRuns().map(\.name)
        #expect(r1.engine.index.withLock { $0.supersededIndexObjects } == [oldID])
        #expect(r1.engine.location(of: byPack[packs[0]]![0].id) == nil)
        #expect(r1.engine.location(of: byPack[packs[1]]![0].id)?.pack == packs[1])
        let r2 = try await t.reopen()
        #expect(r2.engine.indexCache.loadRuns().map(\.name) == names)
        #expect(r2.engine.index.withLock { $0.supersededIndexObjects } == [oldID])
        #expect(r2.engine.location(of: byPack[packs[0]]![0].id) == nil)
    }
}
