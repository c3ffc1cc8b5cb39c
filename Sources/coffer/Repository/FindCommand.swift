import ArgumentParser
import CofferBackup
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `coffer find PATTERN...`
struct FindCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "find",
        abstract: "Find files and folders in snapshots by name.",
        discussion: """
            A PATTERN is a shell glob (`*`, `?`, `[...]`). A pattern without `/` matches the entry's name; \
            one with `/` matches its whole path as `ls` shows it (`*` does not cross `/`; a leading `/` is \
            ignored). An entry matching any pattern is listed. Snapshots are searched newest first.
            """)

    @OptionGroup var global: GlobalOptions

    @Argument(help: ArgumentHelp("Glob patterns to look for.", valueName: "pattern"))
    var patterns: [String]

    @Option(name: [.customShort("s"), .long], help: ArgumentHelp("Search only this snapshot (repeatable; latest, an id or an id prefix).", valueName: "snapshot"))
    var snapshot: [String] = []

    @Flag(name: [.customShort("i"), .long], help: "Match upper and lower case alike.")
    var ignoreCase = false

    @Flag(name: .long, help: "Print the matches as JSON on stdout.")
    var json = false

    func validate() throws {
        if patterns.isEmpty { throw ValidationError("give at least one pattern") }
    }

    func run() async throws {
        let access = RepositoryAccess(global)
        try await ErrorReport.run(logger: access.logger) {
            let found = try await access.withRepository { repo -> [FindResult] in
                var snaps: [SnapshotInfo]
                if snapshot.isEmpty {
                    snaps = try await repo.snapshots()
                } else {
                    snaps = []
                    for s in snapshot {
                        let info = try await repo.snapshot(matching: s)
                        if !snaps.contains(where: { $0.id == info.id }) { snaps.append(info) }
                    }
                }
                snaps.sort { ($0.time, $0.id) > ($1.time, $1.id) }
                var out: [FindResult] = []
                for s in snaps {
                    let hits = try await repo.entries(snapshot: s.id).filter { matches($0.info.path) }
                    if !hits.isEmpty { out.append(FindResult(s, hits.map(FindResult.Match.init))) }
                }
                return out
            }
            if json {
                try JSONOutput.print(found)
                return .ok
            }
            for (i, r) in found.enumerated() {
                if i > 0 { Terminal.line() }
                Terminal.line("Found \(r.matches.count) in snapshot \(r.snapshot.prefix(8)) from \(Units.localTime(r.time)):")
                for m in r.matches {
                    let size = m.type == "file" ? lpad("\(m.size)", 12) : lpad("", 12)
                    Terminal.line("\(size)  \(Units.localTime(m.modified))  \(m.path)\(m.type == "directory" ? "/" : "")")
                }
            }
            if found.isEmpty { Terminal.line("no matches") }
            return .ok
        }
    }

    func matches(_ rawPath: String) -> Bool {
        // Case folding by lowering both sides (FNM_CASEFOLD is a GNU extension).
        let path = ignoreCase ? rawPath.lowercased() : rawPath
        let name = path.split(separator: "/").last.map(String.init) ?? path
        let flags: Int32 = 0
        for raw in patterns {
            let p = ignoreCase ? raw.lowercased() : raw
            if p.contains("/") {
                let pat = p.hasPrefix("/") ? String(p.drop { $0 == "/" }) : p
                if fnmatch(pat, path, flags | FNM_PATHNAME) == 0 { return true }
            } else if fnmatch(p, name, flags) == 0 {
                return true
            }
        }
        return false
    }
}

/// One snapshot's matches in `coffer find --json`.
struct FindResult: Encodable {
    struct Match: Encodable {
        var path: String
        var type: String
        var size: Int64
        var mode: String
        var modified: Date
        var linkTarget: String?
        enum CodingKeys: String, CodingKey { case path, type, size, mode, modified, linkTarget = "link_target" }

        init(_ e: SnapshotEntry) {
            path = e.info.path
            type = e.info.kind.rawValue
            size = e.info.size
            mode = String(e.info.mode, radix: 8)
            modified = e.info.modified
            linkTarget = e.info.linkTarget
        }
    }

    var snapshot: String
    var time: Date
    var hostname: String
    var matches: [Match]
    enum CodingKeys: String, CodingKey { case snapshot, time, hostname, matches }

    init(_ s: SnapshotInfo, _ matches: [Match]) {
        snapshot = s.id
        time = s.time
        hostname = s.hostname
        self.matches = matches
    }
}
