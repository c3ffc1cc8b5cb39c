import ArgumentParser
import CofferBackup
import Foundation

/// `coffer snapshots`
struct SnapshotsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshots",
        abstract: "List the snapshots in the repository, oldest first.")

    @OptionGroup var global: GlobalOptions

    @Flag(name: .long, help: "Print them as JSON on stdout.")
    var json = false

    func run() async throws {
        let access = RepositoryAccess(global)
        try await ErrorReport.run(logger: access.logger) {
            let list = try await access.withRepository { try await $0.snapshots() }
            if json {
                try JSONOutput.print(list.map(SnapshotJSON.init))
                return .ok
            }
            if list.isEmpty {
                Terminal.line("no snapshots yet")
                return .ok
            }
            Terminal.line(pad("ID", 8) + "  " + pad("Time", 19) + "  " + pad("Host", 16) + "  " + lpad("Files", 8) + "  " + lpad("Size", 10) + "  Paths")
            for s in list {
                Terminal.line(pad(s.shortID, 8) + "  " + pad(Units.localTime(s.time), 19) + "  " + pad(s.hostname, 16) + "  "
                    + lpad("\(s.summary.files)", 8) + "  " + lpad(Units.bytes(Int64(clamping: s.summary.bytesTotal)), 10) + "  "
                    + s.paths.joined(separator: ", ") + (s.tags.isEmpty ? "" : "  [" + s.tags.joined(separator: ", ") + "]"))
            }
            Terminal.line("\(list.count) snapshot\(list.count == 1 ? "" : "s")")
            return .ok
        }
    }
}

func pad(_ s: String, _ n: Int) -> String { s.count >= n ? String(s.prefix(n)) : s + String(repeating: " ", count: n - s.count) }
func lpad(_ s: String, _ n: Int) -> String { s.count >= n ? s : String(repeating: " ", count: n - s.count) + s }

/// One snapshot in `coffer snapshots --json`.
struct SnapshotJSON: Encodable {
    var id: String
    var shortID: String
    var time: Date
    var writerID: String
    var seq: UInt64
    var prev: String?
    var hostname: String
    var paths: [String]
    var tags: [String]
    var files: UInt64
    var directories: UInt64
    var bytesTotal: UInt64
    var bytesNew: UInt64
    var bytesStored: UInt64
    var unreadable: UInt64

    init(_ s: SnapshotInfo) {
        id = s.id
        shortID = s.shortID
        time = s.time
        writerID = s.writerID
        seq = s.seq
        prev = s.prev
        hostname = s.hostname
        paths = s.paths
        tags = s.tags
        files = s.summary.files
        directories = s.summary.directories
        bytesTotal = s.summary.bytesTotal
        bytesNew = s.summary.bytesNew
        bytesStored = s.summary.bytesStored
        unreadable = s.summary.unreadable
    }
}
