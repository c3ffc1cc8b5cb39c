#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// How much snapshots hold and store (`Repository.stats`), as restic's `stats` reports it.
public struct RepositoryStats: Sendable, Hashable {
    /// The snapshot the figures are for; `nil`: every snapshot of the repository.
    public var snapshot: SnapshotInfo?
    public var snapshotsCount = 0
    /// Regular files, counted once per snapshot that holds them.
    public var totalFileCount = 0
    /// Bytes a restore of the snapshots would write (file sizes, summed per snapshot).
    public var restoreSize: Int64 = 0
    /// Distinct blobs (data and trees) the snapshots need.
    public var blobCount = 0
    /// Their plaintext bytes.
    public var uncompressedSize: Int64 = 0
    /// Their stored bytes (compressed and encrypted, before pack padding).
    public var storedSize: Int64 = 0
    /// With one snapshot: the stored bytes of its blobs that no other snapshot needs (what
    /// forgetting it and pruning would free, padding aside).
    public var uniqueStoredSize: Int64?
    /// restore size ÷ plaintext of the distinct data blobs (how much deduplication saves).
    public var dedupRatio: Double = 1
    /// plaintext ÷ stored size.
    public var compressionRatio: Double = 1
}

extension Repository {
    /// Statistics of one snapshot (`latest`, an id or a prefix), or of every snapshot when `nil`.
    /// - Throws: `BackupError` `.dataMissing` when a blob a snapshot needs is in no index.
    public func stats(snapshot selector: String? = nil) async throws(BackupError) -> RepositoryStats {
        let all = try await snapshots()
        var chosen = all
        if let selector { chosen = [try await snapshot(matching: selector)] }
        var s = RepositoryStats()
        s.snapshot = selector == nil ? nil : chosen.first
        s.snapshotsCount = chosen.count
        var blobs = Set<String>()
        var dataBlobs = Set<String>()
        for snap in chosen {
            blobs.insert(try await rootTree(snapshot: snap.id))
            for e in try await entries(snapshot: snap.id) {
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
            guard let b = blobStat(id) else {
                throw BackupError(.dataMissing, object: "blob \(id)",
                                  message: "blob \(id) is not in the index: its data is missing; `check` lists what is damaged")
            }
            s.blobCount += 1
            s.storedSize += Int64(b.storedLength)
            s.uncompressedSize += Int64(b.length)
            if dataBlobs.contains(id) { dataPlain += Int64(b.length) }
        }
        s.dedupRatio = dataPlain > 0 ? Double(s.restoreSize) / Double(dataPlain) : 1
        s.compressionRatio = s.storedSize > 0 ? Double(s.uncompressedSize) / Double(s.storedSize) : 1
        if selector != nil {
            var others = Set<String>()
            for other in all where !chosen.contains(where: { $0.id == other.id }) {
                others.insert(try await rootTree(snapshot: other.id))
                for e in try await entries(snapshot: other.id) {
                    if let t = e.subtree { others.insert(t) }
                    others.formUnion(e.content)
                }
            }
            s.uniqueStoredSize = blobs.subtracting(others).reduce(0) { $0 + Int64(blobStat($1)?.storedLength ?? 0) }
        }
        return s
    }
}
