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
            let found = try await access.withRepository { repo in try await repo.stats(snapshot: snapshot) }
            let stats = StatsJSON(found, mode: mode.rawValue)
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

/// `coffer stats --json` (docs/schemas/stats.json).
struct StatsJSON: Encodable {
    var mode: String
    var snapshot: String?
    var snapshotsCount: Int
    var totalSize: Int64
    var totalFileCount: Int
    var restoreSize: Int64
    var blobCount: Int
    var uncompressedSize: Int64
    var storedSize: Int64
    var uniqueStoredSize: Int64?
    var dedupRatio: Double
    var compressionRatio: Double

    init(_ s: RepositoryStats, mode: String) {
        self.mode = mode
        snapshot = s.snapshot?.id
        snapshotsCount = s.snapshotsCount
        totalSize = mode == "restore-size" ? s.restoreSize : s.storedSize
        totalFileCount = s.totalFileCount
        restoreSize = s.restoreSize
        blobCount = s.blobCount
        uncompressedSize = s.uncompressedSize
        storedSize = s.storedSize
        uniqueStoredSize = s.uniqueStoredSize
        dedupRatio = s.dedupRatio
        compressionRatio = s.compressionRatio
    }

    enum CodingKeys: String, CodingKey {
        case mode, snapshot
        case snapshotsCount = "snapshots_count", totalSize = "total_size", totalFileCount = "total_file_count"
        case restoreSize = "restore_size", blobCount = "blob_count", uncompressedSize = "uncompressed_size"
        case storedSize = "stored_size", uniqueStoredSize = "unique_stored_size", dedupRatio = "dedup_ratio"
        case compressionRatio = "compression_ratio"
    }
}
