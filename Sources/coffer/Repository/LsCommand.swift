import ArgumentParser
import CofferBackup
import Foundation

/// `coffer ls SNAPSHOT [PATH]`
struct LsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ls",
        abstract: "List the files in a snapshot.",
        discussion: "SNAPSHOT is `latest`, a snapshot id or a unique prefix of one (at least 4 digits). PATH is a path inside the snapshot, as this command shows them, or an absolute path as it was on the machine backed up (below one of the snapshot's paths).")

    @OptionGroup var global: GlobalOptions

    @Argument(help: ArgumentHelp("The snapshot: latest, an id, or an id prefix.", valueName: "snapshot"))
    var snapshot: String

    @Argument(help: ArgumentHelp("A folder or file inside the snapshot (default: everything).", valueName: "path"))
    var path: String?

    @Flag(name: [.short, .long], help: "Show type, mode, size and modification time.")
    var long = false

    @Flag(inversion: .prefixedNo, help: "List everything below PATH, not only its direct entries.")
    var recursive = true

    @Flag(name: .long, help: "Print the entries as JSON on stdout.")
    var json = false

    func run() async throws {
        let access = RepositoryAccess(global)
        try await ErrorReport.run(logger: access.logger) {
            let nodes = try await access.withRepository { repo in
                let snap = try await repo.snapshot(matching: snapshot)
                return try await repo.list(snapshot: snap.id, path: path, recursive: recursive)
            }
            if json {
                try JSONOutput.print(nodes.map(NodeJSON.init))
                return .ok
            }
            for n in nodes {
                guard long else {
                    Terminal.line(n.path)
                    continue
                }
                let type: String
                switch n.kind {
                case .file: type = "-"
                case .directory: type = "d"
                case .symlink: type = "l"
                case .fifo: type = "p"
                }
                let mode = type + permissionString(n.mode)
                var line = "\(mode)  \(lpad(n.kind == .file ? "\(n.size)" : "", 12))  \(Units.localTime(n.modified))  \(n.path)"
                if let t = n.linkTarget { line += " -> \(t)" }
                if n.isDatabase { line += "  (SQLite, captured live)" }
                Terminal.line(line)
            }
            return .ok
        }
    }
}

/// 0o754 → "rwxr-xr--".
func permissionString(_ mode: UInt32) -> String {
    let chars: [Character] = ["r", "w", "x"]
    var s = ""
    for shift in stride(from: 6, through: 0, by: -3) {
        let bits = (mode >> UInt32(shift)) & 7
        for i in 0..<3 { s.append(bits & (4 >> UInt32(i)) != 0 ? chars[i] : "-") }
    }
    return s
}

/// One entry in `coffer ls --json`.
struct NodeJSON: Encodable {
    var path: String
    var type: String
    var size: Int64
    var mode: String
    var modified: Date
    var linkTarget: String?
    var database: Bool

    init(_ n: NodeInfo) {
        path = n.path
        type = n.kind.rawValue
        size = n.size
        mode = String(n.mode, radix: 8)
        modified = n.modified
        linkTarget = n.linkTarget
        database = n.isDatabase
    }
}
