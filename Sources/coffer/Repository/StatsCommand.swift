import ArgumentParser
import CofferBackup
import Foundation

/// `coffer stats [SNAPSHOT]`
struct StatsCommand: AsyncParsableCommand {
    enum Mode: String, ExpressibleByArgument, CaseIterable {
        case restoreSize = "restore-size"
        case rawData = "raw-data"
    }

    static let configuration = CommandConfiguration(
        commandName: "stats",
        abstract: "Show how much a snapshot (or the whole repository) holds and stores.",
        discussion: """
            restore-size (the default) counts what a restore writes: files and their bytes, summed over \
            the snapshots. raw-data counts the blobs the snapshots need, each once: their plaintext bytes \
            and the bytes stored for them (compressed, encrypted). The dedup ratio is restore size over \
            the plaintext of the distinct content blobs. With SNAPSHOT, unique_stored_size is what only \
            that snapshot needs (what forget and prune would free).
            """)

    @OptionGroup var global: GlobalOptions

    @Argument(help: ArgumentHelp("One snapshot (latest, an id, an id prefix); default: every snapshot.", valueName: "snapshot"))
    var snapshot: String?

    @Option(name: .long, help: ArgumentHelp("restore-size or raw-data.", valueName: "mode"))
    var mode: Mode = .restoreSize

    @Flag(name: .long, help: "Print the statistics as JSON on stdout.")
    var json = false

    func run() async throws {
        let access = RepositoryAccess(global)
        try await ErrorReport.run(logger: access.logger) {
            let stats = try await access.withRepository { repo -> RepositoryStats in
                let all = try await repo.snapshots()
                var chosen = all
                if let snapshot { chosen = [try await repo.snapshot(matching: snapshot)] }
                var s = RepositoryStats(mode: mode.rawValue, snapshot: chosen.count == 1 && snapshot != nil ? chosen[0].id : nil)
                s.snapshotsCount = chosen.count
                var blobs = Set<String>()
                var dataBlobs = Set<String>()
                for snap in chosen {
                    blobs.insert(try await repo.rootTree(snapshot: snap.id))
                    for e in try await repo.entries(snapshot: snap.id) {
                        if e.info.kind == .file {
                            s.totalFileCount += 1
                            s.restoreSize += e.info.size
                        }
                        if let t = e.subtree { blobs.insert(t) }
                        for c in e.content {
                            blobs.insert(c)
                            dataBlobs.insert(c)
                        }
                    }
                }
                var dataPlain: Int64 = 0
                for id in blobs {
                    guard let b = repo.blobStat(id) else {
                        throw CLIError(.damaged, "blob \(id) is not in the index: its data is missing",
                                       hint: "Run `coffer check` to see what is damaged.")
                    }
                    s.blobCount += 1
                    s.storedSize += Int64(b.storedLength)
                    s.uncompressedSize += Int64(b.length)
                    if dataBlobs.contains(id) { dataPlain += Int64(b.length) }
                }
                s.dedupRatio = dataPlain > 0 ? Double(s.restoreSize) / Double(dataPlain) : 1
                s.compressionRatio = s.storedSize > 0 ? Double(s.uncompressedSize) / Double(s.storedSize) : 1
                if snapshot != nil {
                    var others = Set<String>()
                    for other in all where !chosen.contains(where: { $0.id == other.id }) {
                        others.insert(try await repo.rootTree(snapshot: other.id))
                        for e in try await repo.entries(snapshot: other.id) {
                            if let t = e.subtree { others.insert(t) }
                            others.formUnion(e.content)
                        }
                    }
                    s.uniqueStoredSize = blobs.subtracting(others).reduce(0) { $0 + Int64(repo.blobStat($1)?.storedLength ?? 0) }
                }
                s.totalSize = mode == .restoreSize ? s.restoreSize : s.storedSize
                return s
            }
            if json {
                try JSONOutput.print(stats)
                return .ok
            }
            Terminal.line("Stats in \(mode.rawValue) mode" + (stats.snapshot.map { " for snapshot \($0.prefix(8))" } ?? " for the whole repository") + ":")
            Terminal.line("     Snapshots:  \(stats.snapshotsCount)")
            switch mode {
            case .restoreSize:
                Terminal.line("         Files:  \(stats.totalFileCount)")
                Terminal.line("  Restore size:  \(Units.bytes(stats.restoreSize))")
            case .rawData:
                Terminal.line("         Blobs:  \(stats.blobCount)")
                Terminal.line("     Plaintext:  \(Units.bytes(stats.uncompressedSize))")
                Terminal.line("   Stored size:  \(Units.bytes(stats.storedSize))")
                if let u = stats.uniqueStoredSize { Terminal.line("   Only in it:   \(Units.bytes(u))") }
                Terminal.line("   Compression:  \(String(format: "%.2fx", stats.compressionRatio))")
            }
            Terminal.line("   Dedup ratio:  \(String(format: "%.2fx", stats.dedupRatio))")
            return .ok
        }
    }
}

/// `coffer stats --json`.
struct RepositoryStats: Encodable {
    var mode: String
    var snapshot: String?
    var snapshotsCount = 0
    var totalSize: Int64 = 0
    var totalFileCount = 0
    var restoreSize: Int64 = 0
    var blobCount = 0
    var uncompressedSize: Int64 = 0
    var storedSize: Int64 = 0
    var uniqueStoredSize: Int64?
    var dedupRatio: Double = 1
    var compressionRatio: Double = 1

    init(mode: String, snapshot: String?) {
        self.mode = mode
        self.snapshot = snapshot
    }

    enum CodingKeys: String, CodingKey {
        case mode, snapshot
        case snapshotsCount = "snapshots_count", totalSize = "total_size", totalFileCount = "total_file_count"
        case restoreSize = "restore_size", blobCount = "blob_count", uncompressedSize = "uncompressed_size"
        case storedSize = "stored_size", uniqueStoredSize = "unique_stored_size", dedupRatio = "dedup_ratio"
        case compressionRatio = "compression_ratio"
    }
}
