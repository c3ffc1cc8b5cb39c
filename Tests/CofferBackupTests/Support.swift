import CofferPosix
import Foundation
import Testing
@testable import CofferBackup
import CofferCore
import CofferStorage

/// A scratch directory under /tmp, removed at the end of the test.
final class Scratch {
    let root: String
    init() {
        root = NSTemporaryDirectory() + "coffer-engine-test-" + UUID().uuidString
        try! FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: root) }
    func path(_ p: String) -> String { root + "/" + p }
}

struct TestRepo {
    let scratch: Scratch
    let storage: LocalStorage
    let key: BackupKey
    let repo: Repository
    let device: DeviceKeyStore

    /// Without size padding: for tests that check stored byte counts (dedup, compression), which
    /// padding to Padmé sizes with a 1 MiB floor rounds up on purpose.
    static let unpadded = RepositoryOptions(fileChunkSize: 1 << 20, targetPackSize: 4 << 20, padding: .none)

    static func make(_ scratch: Scratch, options: RepositoryOptions = RepositoryOptions(fileChunkSize: 1 << 20, targetPackSize: 4 << 20)) async throws -> TestRepo {
        let storage = try LocalStorage(root: scratch.path("repo"), create: true)
        let key = BackupKey()
        let device = DeviceKeyStore(home: URL(fileURLWithPath: scratch.path("home")))
        let repo = try await Repository.initialize(storage: storage, key: key, options: options, deviceStore: device)
        return TestRepo(scratch: scratch, storage: storage, key: key, repo: repo, device: device)
    }

    func reopen() async throws -> Repository {
        try await Repository.open(storage: storage, key: key, deviceStore: device)
    }
}

/// Deterministic pseudo-random bytes (xorshift), fast enough for tens of MB.
func randomBytes(_ count: Int, seed: UInt64) -> Data {
    var s = seed | 1
    var out = Data(count: count)
    out.withUnsafeMutableBytes { raw in
        let words = count / 8
        let p = raw.baseAddress!
        for i in 0..<words {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17
            p.storeBytes(of: s, toByteOffset: i * 8, as: UInt64.self)
        }
        for i in (words * 8)..<count {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17
            p.storeBytes(of: UInt8(truncatingIfNeeded: s), toByteOffset: i, as: UInt8.self)
        }
    }
    return out
}

func write(_ data: Data, to path: String, mode: Int = 0o644, mtime: TimeInterval? = nil) {
    let dir = (path as NSString).deletingLastPathComponent
    try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    FileManager.default.createFile(atPath: path, contents: data)
    chmod(path, mode_t(mode))
    if let mtime { setMtime(path, mtime) }
}

func setMtime(_ path: String, _ t: TimeInterval) {
    let sec = Int64(t.rounded(.down))
    _ = Posix.setTimes(path, sec: sec, nsec: UInt32((t - Double(sec)) * 1e9))
}

/// A tree with nested directories, an empty file, symlinks, odd permissions and set mtimes.
func makeSampleTree(at root: String, bigFileMB: Int = 20) {
    let old = Date().timeIntervalSince1970 - 3600
    write(Data("hello\n".utf8), to: root + "/a.txt", mode: 0o600, mtime: old - 100.25)
    write(Data(), to: root + "/empty", mode: 0o644, mtime: old - 50)
    write(randomBytes(bigFileMB << 20, seed: 42), to: root + "/media/big.bin", mode: 0o644, mtime: old - 10)
    write(randomBytes(300_000, seed: 7), to: root + "/media/photo.jpg", mode: 0o640, mtime: old - 20)
    write(randomBytes(300_000, seed: 7), to: root + "/media/forwarded.jpg", mode: 0o640, mtime: old - 20)
    write(Data("deep".utf8), to: root + "/d1/d2/d3/deep.txt", mode: 0o755, mtime: old - 30)
    try! FileManager.default.createDirectory(atPath: root + "/emptydir", withIntermediateDirectories: true)
    symlink("a.txt", root + "/link-to-a")
    symlink("/nonexistent/target", root + "/dangling")
    chmod(root + "/d1/d2", 0o750)
    setMtime(root + "/d1/d2", old - 500)
    setMtime(root + "/emptydir", old - 600)
}

/// Compares two trees: kinds, contents, permission bits, mtimes (files, symlinks, dirs), link targets.
func expectSameTree(_ a: String, _ b: String, checkDirTimes: Bool = true, sourceLocation: SourceLocation = #_sourceLocation) {
    let fm = FileManager.default
    let namesA = (try? fm.contentsOfDirectory(atPath: a).sorted()) ?? []
    let namesB = (try? fm.contentsOfDirectory(atPath: b).sorted()) ?? []
    #expect(namesA == namesB, "entries of \(a) vs \(b)", sourceLocation: sourceLocation)
    for n in namesA where namesB.contains(n) {
        let pa = a + "/" + n, pb = b + "/" + n
        guard case .success(let sa) = FileStat.lstat(pa), case .success(let sb) = FileStat.lstat(pb) else {
            Issue.record("cannot stat \(pa) or \(pb)", sourceLocation: sourceLocation)
            continue
        }
        #expect(sa.kind == sb.kind, "\(n) kind", sourceLocation: sourceLocation)
        if sa.kind != .symlink {
            #expect(sa.mode == sb.mode, "\(n) mode \(String(sa.mode, radix: 8)) vs \(String(sb.mode, radix: 8))", sourceLocation: sourceLocation)
        }
        if sa.kind != .directory || checkDirTimes {
            #expect(sa.mtimeSec == sb.mtimeSec && sa.mtimeNsec == sb.mtimeNsec, "\(n) mtime", sourceLocation: sourceLocation)
        }
        switch sa.kind {
        case .regular:
            #expect(fm.contents(atPath: pa) == fm.contents(atPath: pb), "\(n) content", sourceLocation: sourceLocation)
        case .symlink:
            #expect((try? fm.destinationOfSymbolicLink(atPath: pa)) == (try? fm.destinationOfSymbolicLink(atPath: pb)), sourceLocation: sourceLocation)
        case .directory:
            expectSameTree(pa, pb, checkDirTimes: checkDirTimes, sourceLocation: sourceLocation)
        case .other:
            break
        }
    }
}

func allFiles(under root: String) -> [String] {
    let e = FileManager.default.enumerator(atPath: root)
    var out: [String] = []
    while let p = e?.nextObject() as? String { out.append(p) }
    return out.sorted()
}

/// Flips one byte of a file in place.
func flipByte(_ path: String, at offset: Int) {
    var d = FileManager.default.contents(atPath: path)!
    let i = offset >= 0 ? offset : d.count + offset
    d[i] ^= 0x5a
    // Objects are written read-only by some backends: replace the file.
    unlink(path)
    FileManager.default.createFile(atPath: path, contents: d)
}
