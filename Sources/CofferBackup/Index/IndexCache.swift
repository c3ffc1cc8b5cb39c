#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CofferCore
import Synchronization
import CofferPosix

/// The device's cache of the repository index: sorted, memory-mapped run files under
/// `$COFFER_HOME/cache/<repository id>/` (a private temporary folder, removed when the repository is
/// released, when there is no device store), listed by an authenticated `manifest`.
///
/// It is only a cache: the index objects in the repository stay the truth. Every run records the
/// index objects it was built from; a run is used only while all of them are still live, and a
/// run or manifest that fails its tag (damage, truncation, another repository or key) is deleted
/// and rebuilt from the index objects, never trusted. New files are written under a temporary name,
/// fsynced and renamed; the manifest is replaced the same way after the runs it lists, and files it
/// no longer lists are removed last, so a crash leaves the old valid cache or none.
final class IndexCache: @unchecked Sendable {
    let dir: URL
    let temporary: Bool
    let mac: DeviceCacheMAC
    let repositoryID: [UInt8]
    /// Records per run written while reading index objects (bounds the memory of a first build).
    var batchRecords = 1 << 20
    /// Runs this process wrote: removed as soon as no manifest lists them (a first build's batches).
    let written = Mutex(Set<String>())

    init(deviceStore: DeviceKeyStore?, repositoryIDHex: String, keys: RepositoryKeys) {
        let device = deviceStore.map {
            $0.home.appendingPathComponent("cache", isDirectory: true).appendingPathComponent(repositoryIDHex, isDirectory: true)
        }
        // A device folder that cannot be written (read-only home) costs the cache its persistence, not the open.
        if let device, (try? FileManager.default.createDirectory(at: device, withIntermediateDirectories: true,
                                                                 attributes: [.posixPermissions: 0o700])) != nil,
           FileManager.default.isWritableFile(atPath: device.path) {
            dir = device
            temporary = false
        } else {
            dir = FileManager.default.temporaryDirectory
                .appendingPathComponent("coffer-index-\(Hex.string((0..<12).map { _ in UInt8.random(in: 0...255) }))", isDirectory: true)
            temporary = true
        }
        mac = DeviceCacheMAC(keys: keys)
        repositoryID = Array(keys.repositoryID)
    }

    deinit {
        if temporary { try? FileManager.default.removeItem(at: dir) }
    }

    var manifestURL: URL { dir.appendingPathComponent("manifest") }

    func prepare() throws(BackupError) {
        do {
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw BackupError(.fileSystem, message: "cannot create the index cache folder \(dir.path): \(Engine.posixReason(error)). Free space or set COFFER_HOME to a writable folder")
        }
    }

    func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

    // MARK: Manifest

    /// The runs the manifest lists, each verified in full; `[]` when there is no cache or any part
    /// of it fails verification (then the cache is removed, to be rebuilt).
    func loadRuns() -> [IndexRun] {
        guard let bytes = try? Data(contentsOf: manifestURL) else { return [] }
        let b = [UInt8](bytes)
        func bad() -> [IndexRun] { clear(); return [] }
        guard b.count >= 12 + 32, Array(b[0..<4]) == Array("CFXM".utf8), b[4] == 1, b[5] == 0 else { return bad() }
        let body = Array(b[0..<(b.count - 32)])
        guard constantTimeEqual(body.withUnsafeBytes { mac.tag($0) }, Array(b[(b.count - 32)...])) else { return bad() }
        guard Array(b[8..<24]) == Array(repositoryID.prefix(16)) else { return bad() }
        let n = Int(b[24]) | Int(b[25]) << 8 | Int(b[26]) << 16 | Int(b[27]) << 24
        guard body.count == 28 + n * 48 else { return bad() }
        var runs: [IndexRun] = []
        for i in 0..<n {
            let o = 28 + i * 48
            let name = "run-" + Hex.string(b[o..<(o + 16)]) + ".cix"
            do {
                runs.append(try IndexRun(path: path(name), name: name, tag: Array(b[(o + 16)..<(o + 48)]), mac: mac, repositoryID: repositoryID))
            } catch {
                return bad()
            }
        }
        return runs
    }

    /// Makes `runs` the cache: writes the manifest (temporary name, fsync, rename), then removes
    /// every file it does not list.
    func commit(_ runs: [IndexRun]) throws(BackupError) {
        var b = Array("CFXM".utf8) + [1, 0, 0, 0]
        b += repositoryID.prefix(16)
        let n = UInt32(runs.count)
        b += [UInt8(n & 0xff), UInt8(n >> 8 & 0xff), UInt8(n >> 16 & 0xff), UInt8(n >> 24)]
        for r in runs {
            b += Hex.bytes(String(r.name.dropFirst(4).dropLast(4))) ?? []
            b += r.tag
        }
        b += b.withUnsafeBytes { mac.tag($0) }
        TestHooks.crashPoint("index-cache-run")
        do { try DeviceKeyStore.writePrivateFile(Data(b), to: manifestURL) } catch {
            throw BackupError(.fileSystem, message: "cannot write the index cache manifest in \(dir.path): \(error). Free space or set COFFER_HOME to a writable folder")
        }
        TestHooks.crashPoint("index-cache-manifest")
        // Files of another process opening the same repository may be in flight (a run written,
        // its manifest not yet): only what is older than two minutes goes.
        let keep = Set(runs.map(\.name) + ["manifest"])
        for f in (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? [] where !keep.contains(f) {
            let modified = (try? FileManager.default.attributesOfItem(atPath: path(f)))?[.modificationDate] as? Date
            if let modified, Date().timeIntervalSince(modified) < 120, !written.withLock({ $0.contains(f) }) { continue }
            unlink(path(f))
        }
    }

    /// Removes every cache file (the manifest first).
    func clear() {
        unlink(manifestURL.path)
        for f in (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? [] { unlink(path(f)) }
    }

    // MARK: Writing runs

    /// Writes a run (temporary name, fsync, rename, fsync the folder), then reads it back through
    /// its tag, so the run in use is exactly what is on disk.
    func writeRun(covered: [ObjectID], superseded: [ObjectID], packs: [RunPack], bound: Int,
                  next: () -> RunRecord?) throws(BackupError) -> IndexRun {
        try prepare()
        let name = "run-" + Hex.string((0..<16).map { _ in UInt8.random(in: 0...255) }) + ".cix"
        let tmp = path(".tmp-" + name)
        do {
            _ = try RunWriter.write(path: tmp, repositoryID: repositoryID, covered: covered, superseded: superseded,
                                    packs: packs, bound: bound, next: next)
            guard let tag = RunTag.compute(path: tmp, mac: mac) else { throw RunError.invalid("cannot read back \(tmp)") }
            TestHooks.crashPoint("index-cache-temporary")
            guard Posix.rename(tmp, path(name)) else { throw RunError.invalid("cannot rename \(tmp): \(String(cString: strerror(errno)))") }
            Posix.syncDirectory(dir.path)
            written.withLock { _ = $0.insert(name) }
            return try IndexRun(path: path(name), name: name, tag: tag, mac: mac, repositoryID: repositoryID, verified: true)
        } catch {
            unlink(tmp)
            throw BackupError(.fileSystem, message: "cannot write the index cache in \(dir.path): \(error). Free space or set COFFER_HOME to a writable folder")
        }
    }

    /// A run from records in memory (sorted here).
    func writeRun(_ batch: RunBatch) throws(BackupError) -> IndexRun {
        var recs = batch.records
        let packs = batch.packs
        recs.sort { a, b in a.id < b.id || (a.id == b.id && packs[Int(a.pack)].id < packs[Int(b.pack)].id) }
        var i = 0
        return try writeRun(covered: batch.covered, superseded: batch.superseded, packs: packs, bound: recs.count) {
            guard i < recs.count else { return nil }
            defer { i += 1 }
            return recs[i]
        }
    }

    /// One run holding every record of `runs` (a k-way merge of their sorted records; packs listed
    /// by several runs are kept once).
    func merge(_ runs: [IndexRun]) throws(BackupError) -> IndexRun {
        var packs: [RunPack] = []
        var packOrdinal: [ObjectID: UInt32] = [:]
        var remap: [[UInt32]] = []
        for r in runs {
            var m = [UInt32](repeating: 0, count: r.packCount)
            for o in 0..<r.packCount {
                let id = r.packID(o)
                if let e = packOrdinal[id] { m[o] = e; continue }
                let n = UInt32(packs.count)
                packOrdinal[id] = n
                packs.append(r.runPack(o))
                m[o] = n
            }
            remap.append(m)
        }
        var pos = [Int](repeating: 0, count: runs.count)
        var heads: [IDWords?] = runs.map { $0.count > 0 ? IDWords($0.map, $0.offKeys) : nil }
        let covered = Array(Set(runs.flatMap(\.covered))).sorted()
        let superseded = Array(Set(runs.flatMap(\.superseded))).sorted()
        return try writeRun(covered: covered, superseded: superseded, packs: packs, bound: runs.reduce(0) { $0 + $1.count }) {
            var best = -1
            for k in 0..<runs.count {
                guard let h = heads[k] else { continue }
                if best < 0 { best = k; continue }
                let bh = heads[best]!
                if h < bh { best = k; continue }
                if h == bh {
                    let pk = packs[Int(remap[k][Int(runs[k].map.u32(runs[k].offKeys + pos[k] * RunFormat.recordSize + 32))])].id
                    let pb = packs[Int(remap[best][Int(runs[best].map.u32(runs[best].offKeys + pos[best] * RunFormat.recordSize + 32))])].id
                    if pk < pb { best = k }
                }
            }
            guard best >= 0 else { return nil }
            let r = runs[best]
            var rec = r.record(pos[best])
            rec.pack = remap[best][Int(rec.pack)]
            pos[best] += 1
            // Records read sequentially are dropped from this process's resident set as it goes.
            if pos[best] % 65_536 == 0 {
                r.map.release(r.offKeys + (pos[best] - 65_536) * RunFormat.recordSize, 65_536 * RunFormat.recordSize)
            }
            heads[best] = pos[best] < r.count ? IDWords(r.map, r.offKeys + pos[best] * RunFormat.recordSize) : nil
            return rec
        }
    }
}

/// Index objects read into memory, waiting to become a run.
struct RunBatch {
    var covered: [ObjectID] = []
    var superseded: [ObjectID] = []
    var packs: [RunPack] = []
    var ordinal: [ObjectID: UInt32] = [:]
    var records: [RunRecord] = []

    mutating func add(_ id: ObjectID, _ f: IndexFile) {
        covered.append(id)
        superseded += f.supersedes
        for p in f.packs {
            let o: UInt32
            if let e = ordinal[p.id] { o = e } else {
                o = UInt32(packs.count)
                ordinal[p.id] = o
                packs.append(RunPack(id: p.id, salt: Array(p.salt), length: UInt64(p.length)))
            }
            for e in p.entries { records.append(RunRecord(e, pack: o)) }
        }
    }
}

extension Engine {
    static func posixReason(_ error: any Error) -> String {
        "\(error)"
    }
}
