import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A small fast PRNG so generated data is reproducible per seed.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// `count` incompressible bytes.
    mutating func bytes(_ count: Int) -> Data {
        var d = Data(count: count)
        d.withUnsafeMutableBytes { raw in
            let words = count / 8
            let p = raw.baseAddress!
            for i in 0..<words { p.storeBytes(of: next(), toByteOffset: i * 8, as: UInt64.self) }
            for i in (words * 8)..<count { p.storeBytes(of: UInt8(truncatingIfNeeded: next()), toByteOffset: i, as: UInt8.self) }
        }
        return d
    }
}

enum Fixtures {
    /// Writes a tree with nested folders, random and compressible files, an empty file, symlinks
    /// (relative, absolute, dangling), various permissions and mtimes with sub-second parts.
    static func makeTree(at root: URL, seed: UInt64 = 1, scale: Int = 1) throws {
        var rng = SplitMix64(seed: seed)
        let fm = FileManager.default
        for dir in ["docs", "docs/deep/er", "media", "empty-dir", "sp ace"] {
            try fm.createDirectory(at: root.appendingPathComponent(dir), withIntermediateDirectories: true)
        }
        try rng.bytes(300_000 * scale).write(to: root.appendingPathComponent("media/photo.jpg"))
        try rng.bytes(3_500_000 * scale).write(to: root.appendingPathComponent("media/video.mp4"))
        try Data(String(repeating: "hello coffer, compressible text\n", count: 20_000 * scale).utf8)
            .write(to: root.appendingPathComponent("docs/notes.txt"))
        try rng.bytes(1).write(to: root.appendingPathComponent("docs/deep/er/one-byte"))
        try Data().write(to: root.appendingPathComponent("docs/empty"))
        try Data("unicode name\n".utf8).write(to: root.appendingPathComponent("sp ace/naïve ✓.txt"))
        try rng.bytes(65_537).write(to: root.appendingPathComponent("docs/deep/odd-size.bin"))
        try fm.createSymbolicLink(atPath: root.appendingPathComponent("link-rel").path, withDestinationPath: "docs/notes.txt")
        try fm.createSymbolicLink(atPath: root.appendingPathComponent("docs/link-abs").path, withDestinationPath: "/etc/hostname")
        try fm.createSymbolicLink(atPath: root.appendingPathComponent("dangling").path, withDestinationPath: "does/not/exist")
        chmod(root.appendingPathComponent("docs/notes.txt").path, 0o600)
        chmod(root.appendingPathComponent("media/photo.jpg").path, 0o640)
        chmod(root.appendingPathComponent("docs/deep/odd-size.bin").path, 0o755)
        chmod(root.appendingPathComponent("docs/deep").path, 0o750)
        // mtimes in the past (also older than the 2 s "recent" window), with nanoseconds.
        var when = 1_600_000_000
        for rel in ["media/photo.jpg", "media/video.mp4", "docs/notes.txt", "docs/empty", "docs/deep/er/one-byte",
                    "docs/deep/odd-size.bin", "sp ace/naïve ✓.txt"] {
            when += 86_400 + 17
            setMTime(root.appendingPathComponent(rel).path, seconds: when, nanos: 123_456_789)
        }
    }

    static func setMTime(_ path: String, seconds: Int, nanos: Int = 0) {
        var times = [timespec(tv_sec: seconds, tv_nsec: nanos), timespec(tv_sec: seconds, tv_nsec: nanos)]
        utimensat(AT_FDCWD, path, &times, AT_SYMLINK_NOFOLLOW)
    }

    /// `count` random files of `size` bytes under `dir` (for big, slow-enough backups).
    static func makeBulk(at dir: URL, files count: Int, size: Int, seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        for i in 0..<count {
            try rng.bytes(size).write(to: dir.appendingPathComponent(String(format: "file-%04d.bin", i)))
        }
    }
}

/// One entry of a directory tree as a restore must reproduce it.
struct Entry: Equatable, CustomStringConvertible {
    enum Kind: Equatable { case file(Data), directory, symlink(String) }
    var kind: Kind
    var mode: UInt32
    var mtimeSeconds: Int
    var mtimeNanos: Int

    var description: String {
        switch kind {
        case .file(let d): return "file(\(d.count) bytes) mode \(String(mode, radix: 8)) mtime \(mtimeSeconds).\(mtimeNanos)"
        case .directory: return "dir mode \(String(mode, radix: 8))"
        case .symlink(let t): return "symlink -> \(t)"
        }
    }
}

enum TreeCompare {
    /// Every entry under `root` by relative path (root itself excluded).
    static func read(_ root: URL) throws -> [String: Entry] {
        var out: [String: Entry] = [:]
        let fm = FileManager.default
        guard let e = fm.enumerator(atPath: root.path) else { return out }
        for case let rel as String in e {
            let path = root.appendingPathComponent(rel).path
            var st = stat()
            guard lstat(path, &st) == 0 else { continue }
            let mode = UInt32(st.st_mode) & 0o7777
            #if canImport(Darwin)
            let (sec, ns) = (Int(st.st_mtimespec.tv_sec), Int(st.st_mtimespec.tv_nsec))
            #else
            let (sec, ns) = (Int(st.st_mtim.tv_sec), Int(st.st_mtim.tv_nsec))
            #endif
            switch UInt32(st.st_mode) & UInt32(S_IFMT) {
            case UInt32(S_IFREG):
                out[rel] = Entry(kind: .file(try Data(contentsOf: URL(fileURLWithPath: path))), mode: mode, mtimeSeconds: sec, mtimeNanos: ns)
            case UInt32(S_IFDIR):
                out[rel] = Entry(kind: .directory, mode: mode, mtimeSeconds: 0, mtimeNanos: 0)
            case UInt32(S_IFLNK):
                out[rel] = Entry(kind: .symlink(try fm.destinationOfSymbolicLink(atPath: path)), mode: 0, mtimeSeconds: 0, mtimeNanos: 0)
            default:
                continue
            }
        }
        return out
    }

    /// Differences between two trees, as readable lines (empty when identical). File mtimes are
    /// compared to the microsecond (what every platform's stat/utimes keep).
    static func differences(_ a: [String: Entry], _ b: [String: Entry]) -> [String] {
        var diffs: [String] = []
        for key in Set(a.keys).union(b.keys).sorted() {
            guard let x = a[key] else { diffs.append("only in restored: \(key)"); continue }
            guard let y = b[key] else { diffs.append("missing from restored: \(key)"); continue }
            var xx = x, yy = y
            xx.mtimeNanos /= 1000
            yy.mtimeNanos /= 1000
            if xx != yy { diffs.append("\(key): original \(x), restored \(y)") }
        }
        return diffs
    }
}
