import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CofferPosix

/// What a backup leaves out, with restic's semantics (restic 0.14, `internal/filter` and
/// `cmd/restic/exclude.go`); docs/CLI.md, "Backup filters", is the user's description.
///
/// A pattern is matched against the absolute path of every file and folder the backup meets
/// (the paths given included), component by component: `*` and `?` never match `/`, `[a-z]` and
/// `[^a-z]` are character classes, `\` escapes, and a `**` component matches any number of
/// components. A pattern starting with `/` must match from the root; any other pattern may match
/// at any depth, and a match of leading components is enough (`cache` leaves out `/x/cache` and
/// everything below it). An excluded folder is not entered.
public struct BackupFilter: Sendable, Hashable {
    /// `--exclude` patterns.
    public var excludes: [String]
    /// `--iexclude` patterns: the same, ignoring case.
    public var caseInsensitiveExcludes: [String]
    /// Leave out the contents of folders holding a `CACHEDIR.TAG` with the standard signature
    /// (the folder and the tag file are kept), as restic's `--exclude-caches`.
    public var excludeCaches: Bool
    /// Stay on the file systems of the paths given: folders on another file system (mount points)
    /// are kept empty, other entries there are left out.
    public var oneFileSystem: Bool

    let patterns: [ExcludePattern]

    /// The signature a `CACHEDIR.TAG` file starts with (https://bford.info/cachedir/).
    public static let cacheDirSignature = "Signature: 8a477f597d28d172789f06886806bc55"

    /// - Throws: `.invalidArgument` naming a malformed pattern (an unclosed `[`, a trailing `\`)
    ///   or a negated one (`!pattern`, which restic 0.14 does not support either).
    public init(excludes: [String] = [], caseInsensitiveExcludes: [String] = [], excludeCaches: Bool = false,
                oneFileSystem: Bool = false) throws(BackupError) {
        self.excludes = excludes
        self.caseInsensitiveExcludes = caseInsensitiveExcludes
        self.excludeCaches = excludeCaches
        self.oneFileSystem = oneFileSystem
        var patterns: [ExcludePattern] = []
        for p in excludes { patterns.append(try ExcludePattern(p, ignoringCase: false)) }
        for p in caseInsensitiveExcludes { patterns.append(try ExcludePattern(p, ignoringCase: true)) }
        self.patterns = patterns
    }

    /// True when the patterns leave out `path` (an absolute path), as the backup decides.
    public func excludes(path: String) -> Bool {
        guard !patterns.isEmpty else { return false }
        let components = ExcludePattern.split(path)
        let lowered = ExcludePattern.split(path.lowercased())
        return patterns.contains { $0.matches($0.ignoringCase ? lowered : components) }
    }

    /// The patterns of an exclude file, as restic reads them: one per line, surrounding spaces
    /// trimmed, blank lines and lines starting with `#` skipped, `$NAME` and `${NAME}` replaced by
    /// the environment's value (empty when unset).
    public static func patterns(fromFile path: String) throws(BackupError) -> [String] {
        try lines(of: path).compactMap { line in
            let t = line.trimmingCharacters(in: .whitespaces)
            return t.isEmpty || t.hasPrefix("#") ? nil : expandEnvironment(t)
        }
    }

    /// The paths of a `--files-from` file (`-` is standard input): one per line, blank lines and
    /// lines starting with `#` skipped, each line a glob pattern expanded as the shell would
    /// (`*` does not match a leading dot). Returns the paths and the lines that matched nothing.
    public static func paths(fromFile path: String) throws(BackupError) -> (paths: [String], unmatched: [String]) {
        var paths: [String] = []
        var unmatched: [String] = []
        for line in try lines(of: path) {
            let t = line.trimmingCharacters(in: .whitespaces)
            if t.isEmpty || t.hasPrefix("#") { continue }
            let found = glob(t)
            if found.isEmpty { unmatched.append(t) } else { paths += found }
        }
        return (paths, unmatched)
    }

    static func lines(of path: String) throws(BackupError) -> [Substring] {
        let data: Data?
        if path == "-" { data = FileHandle.standardInput.readDataToEndOfFile() } else { data = FileManager.default.contents(atPath: path) }
        guard let data else { throw BackupError(.invalidArgument, path: path, message: "cannot read \(path)") }
        guard let text = String(data: data, encoding: .utf8) else {
            throw BackupError(.invalidArgument, path: path, message: "\(path) is not UTF-8 text")
        }
        return text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" || $0 == "\r" })
    }

    /// Go's `os.ExpandEnv`: `$NAME` and `${NAME}`; unset names expand to nothing.
    static func expandEnvironment(_ s: String) -> String {
        let env = ProcessInfo.processInfo.environment
        var out = ""
        var i = s.startIndex
        func isNameChar(_ c: Character) -> Bool { c == "_" || (c.isASCII && (c.isLetter || c.isNumber)) }
        while i < s.endIndex {
            let c = s[i]
            guard c == "$", s.index(after: i) < s.endIndex else { out.append(c); i = s.index(after: i); continue }
            var j = s.index(after: i)
            if s[j] == "{" {
                guard let close = s[j...].firstIndex(of: "}") else { out.append(c); i = s.index(after: i); continue }
                out += env[String(s[s.index(after: j)..<close])] ?? ""
                i = s.index(after: close)
                continue
            }
            let start = j
            while j < s.endIndex, isNameChar(s[j]) { j = s.index(after: j) }
            if start == j { out.append(c); i = s.index(after: i); continue }
            out += env[String(s[start..<j])] ?? ""
            i = j
        }
        return out
    }

    static func glob(_ pattern: String) -> [String] {
        var g = glob_t()
        defer { globfree(&g) }
        #if canImport(Glibc)
        let rc = Glibc.glob(pattern, 0, nil, &g)
        #else
        let rc = Darwin.glob(pattern, 0, nil, &g)
        #endif
        guard rc == 0 else { return [] }
        var out: [String] = []
        for k in 0..<Int(g.gl_pathc) {
            if let p = g.gl_pathv[k] { out.append(String(cString: p)) }
        }
        return out
    }
}

/// One exclude pattern, prepared as restic's `preparePattern`.
struct ExcludePattern: Sendable, Hashable {
    /// Components; `/` first for a rooted pattern; `**` for "any number of components".
    let parts: [String]
    let ignoringCase: Bool

    init(_ text: String, ignoringCase: Bool) throws(BackupError) {
        guard !text.hasPrefix("!") else {
            throw BackupError(.invalidArgument, message: "exclude pattern \"\(text)\": negated patterns (!) are not supported")
        }
        let t = ignoringCase ? text.lowercased() : text
        var parts = Self.split(t)
        // filepath.Clean, lexically: no empty or "." components; ".." removes the one before.
        var cleaned: [String] = []
        for p in parts {
            if p == "." { continue }
            if p == "..", let last = cleaned.last, last != "..", last != "/" { cleaned.removeLast(); continue }
            cleaned.append(p)
        }
        parts = cleaned
        guard !parts.isEmpty else { throw BackupError(.invalidArgument, message: "exclude pattern \"\(text)\" is empty") }
        for p in parts where !Self.wellFormed(p) {
            throw BackupError(.invalidArgument, message: "exclude pattern \"\(text)\" is malformed (an unclosed [ or a trailing \\)")
        }
        self.parts = parts
        self.ignoringCase = ignoringCase
    }

    /// `/a/b` → `["/", "a", "b"]`, `a//b/` → `["a", "b"]`.
    static func split(_ path: String) -> [String] {
        var parts = path.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        if path.hasPrefix("/") { parts.insert("/", at: 0) }
        return parts
    }

    static func wellFormed(_ part: String) -> Bool {
        var inClass = false, escaped = false, classLength = 0
        for c in part {
            if escaped { escaped = false; classLength += 1; continue }
            if c == "\\" { escaped = true; continue }
            if inClass {
                if c == "]", classLength > 0 { inClass = false } else { classLength += 1 }
                if c == "^" && classLength == 1 { classLength = 0 }
            } else if c == "[" {
                inClass = true
                classLength = 0
            }
        }
        return !inClass && !escaped
    }

    static func isSimple(_ part: String) -> Bool { !part.contains { "*?[\\".contains($0) } }

    func matches(_ strs: [String]) -> Bool { Self.match(parts, strs) }

    /// restic's `match`: `**` expanded to 0, 1, 2... `*` components; otherwise the pattern's
    /// components must match consecutive components of the path, from the root for a rooted
    /// pattern, anywhere (after the root) otherwise.
    static func match(_ pattern: [String], _ strs: [String]) -> Bool {
        if let pos = pattern.firstIndex(of: "**") {
            let prefix = Array(pattern[..<pos]), suffix = Array(pattern[(pos + 1)...])
            var i = 0
            while i <= strs.count - pattern.count + 1 {
                if match(prefix + Array(repeating: "*", count: i) + suffix, strs) { return true }
                i += 1
            }
            return false
        }
        if pattern.isEmpty { return strs.isEmpty }
        guard pattern.count <= strs.count else { return false }
        var minOffset = 0
        var maxOffset = strs.count - pattern.count
        if pattern[0] == "/" { maxOffset = 0 } else if strs.first == "/" { minOffset = 1 }
        guard minOffset <= maxOffset else { return false }
        outer: for offset in stride(from: maxOffset, through: minOffset, by: -1) {
            for i in stride(from: pattern.count - 1, through: 0, by: -1) {
                let p = pattern[i], s = strs[offset + i]
                let ok = isSimple(p) ? p == s : fnmatch(p, s, 0) == 0
                if !ok { continue outer }
            }
            return true
        }
        return false
    }
}

/// A filter applied during one backup's walk (on the walking thread only).
final class FilterRun {
    enum Decision { case include, exclude, emptyDirectory }

    let filter: BackupFilter
    /// Devices of the paths given (`oneFileSystem`).
    private var allowedDevices = Set<UInt64>()
    /// Folder path → holds a valid CACHEDIR.TAG.
    private var cacheDirs: [String: Bool] = [:]

    init(_ filter: BackupFilter, targets: [String]) {
        self.filter = filter
        if filter.oneFileSystem {
            for t in targets { if case .success(let st) = FileStat.lstat(t) { allowedDevices.insert(st.device) } }
        }
    }

    /// restic's order: the patterns, then the cache tag of the parent folder, then the device.
    func decide(path: String, _ st: FileStat) -> Decision {
        if filter.excludes(path: path) { return .exclude }
        let (dir, base) = Self.split(path)
        if filter.excludeCaches, base != "CACHEDIR.TAG", isCacheDir(dir) { return .exclude }
        if filter.oneFileSystem, !allowedDevices.contains(st.device) {
            // A mount point is kept, empty, when its parent folder is on an allowed device.
            guard st.kind == .directory, case .success(let parent) = FileStat.lstat(dir),
                  allowedDevices.contains(parent.device) else { return .exclude }
            return .emptyDirectory
        }
        return .include
    }

    private func isCacheDir(_ dir: String) -> Bool {
        if let known = cacheDirs[dir] { return known }
        var found = false
        let fd = Posix.open(dir + "/CACHEDIR.TAG", O_RDONLY)
        if fd >= 0 {
            let sig = Array(BackupFilter.cacheDirSignature.utf8)
            var buf = [UInt8](repeating: 0, count: sig.count)
            let n = buf.withUnsafeMutableBytes { (try? Posix.preadFully(fd, $0.baseAddress!, count: sig.count, offset: 0)) ?? 0 }
            close(fd)
            found = n == sig.count && buf == sig
        }
        cacheDirs[dir] = found
        return found
    }

    static func split(_ path: String) -> (dir: String, base: String) {
        guard let slash = path.lastIndex(of: "/") else { return (".", path) }
        let dir = slash == path.startIndex ? "/" : String(path[..<slash])
        return (dir, String(path[path.index(after: slash)...]))
    }
}

/// One entry a dry run would store (``BackupSummary/dryRunEntries``).
public struct BackupPlanEntry: Sendable, Hashable, Codable {
    public enum Status: String, Sendable, Hashable, Codable {
        /// Not in the parent snapshot: would be read.
        case new
        /// In the parent, but its metadata changed (or a live database): would be read.
        case changed
        /// Same size, times and inode as in the parent: taken over without being read.
        case unchanged
    }

    /// The source path.
    public var path: String
    public var kind: NodeInfo.Kind
    /// For files.
    public var status: Status?
    /// For files: their size.
    public var size: Int64

    public init(path: String, kind: NodeInfo.Kind, status: Status?, size: Int64) {
        self.path = path
        self.kind = kind
        self.status = status
        self.size = size
    }
}

extension BackupRun {
    /// The dry run's outcome, from the walk alone: nothing is read, packed or written.
    func dryRunSummary(_ top: [ScanEntry], absPaths: [String], parentID: String?) -> BackupSummary {
        var entries: [BackupPlanEntry] = []
        var bytesToRead: Int64 = 0
        func visit(_ entry: ScanEntry, _ path: String) {
            switch entry {
            case .file(let job):
                bytesToRead += Int64(job.node.size)
                entries.append(BackupPlanEntry(path: job.path, kind: .file, status: job.parentNode == nil ? .new : .changed,
                                               size: Int64(job.node.size)))
            case .reused(let n):
                entries.append(BackupPlanEntry(path: path, kind: .file, status: .unchanged, size: Int64(n.size)))
            case .symlink:
                entries.append(BackupPlanEntry(path: path, kind: .symlink, status: nil, size: 0))
            case .directory(let dir):
                entries.append(BackupPlanEntry(path: path, kind: .directory, status: nil, size: 0))
                for c in dir.children { visit(c, path + "/" + Self.name(of: c)) }
            }
        }
        let byName = Dictionary(absPaths.map { (String($0.split(separator: "/").last ?? ""), $0) }, uniquingKeysWith: { a, _ in a })
        for entry in top { visit(entry, byName[Self.name(of: entry)] ?? Self.name(of: entry)) }
        let c = pipe.counters.withLock { $0 }
        var summary = BackupSummary(parentID: parentID, filesNew: filesNew, filesChanged: jobs.count - filesNew,
                                    filesUnchanged: filesSkipped, filesSkippedByMetadata: filesSkipped, directories: directories,
                                    symlinks: symlinks, bytesTotal: bytesTotal, bytesRead: bytesToRead, unreadable: c.unreadable,
                                    duration: ContinuousClock.now - started)
        summary.dryRunEntries = entries
        return summary
    }

    static func name(of entry: ScanEntry) -> String {
        let node: TreeNode
        switch entry {
        case .file(let job): node = job.node
        case .reused(let n), .symlink(let n): node = n
        case .directory(let d): node = d.node
        }
        return String(decoding: node.name, as: UTF8.self)
    }
}
