/// How a file is cut into chunks. Every chunk of a file has the same size except the last, so the
/// engine can read a file in chunk-sized pieces and never hold more than one chunk per worker.
///
/// - SQLite databases (detected by their header) are cut in page-aligned groups: pages change in
///   place and never shift, so an unchanged group keeps its chunk id.
/// - Other files are cut in fixed-size chunks (media never changes once written).
public struct ChunkingPolicy: Sendable, Hashable {
    /// Bytes of a file's start that ``plan(forFileStartingWith:)`` looks at (the SQLite header).
    public static let headerLength = 100

    public let fileChunkSize: Int
    public let sqliteGroupSize: Int

    /// - Parameters:
    ///   - fileChunkSize: within ``RepositoryParameters/Bounds/fileChunkSize``.
    ///   - sqliteGroupSize: a power of two within ``RepositoryParameters/Bounds/sqliteGroupSize``.
    public init(fileChunkSize: Int = 1 << 20, sqliteGroupSize: Int = 1 << 16) {
        precondition(RepositoryParameters.Bounds.fileChunkSize.contains(fileChunkSize))
        precondition(RepositoryParameters.Bounds.sqliteGroupSize.contains(sqliteGroupSize)
                     && sqliteGroupSize & (sqliteGroupSize - 1) == 0)
        self.fileChunkSize = fileChunkSize
        self.sqliteGroupSize = sqliteGroupSize
    }

    /// The policy a repository's parameters fix (they were validated when the config was opened).
    public init(parameters: RepositoryParameters) {
        self.init(fileChunkSize: parameters.fileChunkSize, sqliteGroupSize: parameters.sqliteGroupSize)
    }

    /// The chunking of one file.
    public struct Plan: Sendable, Hashable {
        public enum Kind: Sendable, Hashable {
            /// A SQLite database with this page size.
            case sqlite(pageSize: Int)
            /// Any other file.
            case fixed
        }
        public let kind: Kind
        /// Every chunk has this size except the last, which is shorter (or the file is empty).
        public let chunkSize: Int

        /// The byte ranges of the chunks of a file of `length` bytes, in order; they cover
        /// `0..<length` exactly. An empty file has no chunks.
        public func chunkRanges(fileLength length: Int) -> ChunkRanges {
            ChunkRanges(length: length, chunkSize: chunkSize)
        }
    }

    /// Chooses the chunking for a file from its first bytes (up to ``headerLength``; fewer for a
    /// short file).
    public func plan(forFileStartingWith prefix: some Collection<UInt8>) -> Plan {
        if let page = Self.sqlitePageSize(prefix) {
            // Both are powers of two: a group is a whole number of pages, or one page per chunk.
            return Plan(kind: .sqlite(pageSize: page), chunkSize: max(page, sqliteGroupSize))
        }
        return Plan(kind: .fixed, chunkSize: fileChunkSize)
    }

    /// The chunk size for a file starting with `prefix` (shorthand for `plan(...).chunkSize`).
    public func chunkSize(forFileStartingWith prefix: some Collection<UInt8>) -> Int {
        plan(forFileStartingWith: prefix).chunkSize
    }

    static let sqliteMagic: [UInt8] = Array("SQLite format 3\0".utf8)

    /// True when `bytes` start with the 16-byte SQLite header string `"SQLite format 3\0"`.
    public static func isSQLiteHeader(_ bytes: some Collection<UInt8>) -> Bool {
        bytes.starts(with: sqliteMagic)
    }

    /// The page size from a SQLite header (big-endian u16 at offset 16; 1 means 65536), or `nil`
    /// when `bytes` is not a SQLite header or the page size is not a power of two in 512...65536.
    public static func sqlitePageSize(_ bytes: some Collection<UInt8>) -> Int? {
        guard isSQLiteHeader(bytes) else { return nil }
        var r = ByteReader(Array(bytes.prefix(18)))
        guard r.take(16) != nil, let raw16 = r.u16() else { return nil }
        let raw = Int(raw16)
        let size = raw == 1 ? 65536 : raw
        guard size >= 512, size <= 65536, size & (size - 1) == 0 else { return nil }
        return size
    }
}

/// The chunk ranges of one file: `[0, c)`, `[c, 2c)`, …, the last one possibly shorter.
public struct ChunkRanges: RandomAccessCollection, Sendable, Hashable {
    public let length: Int
    public let chunkSize: Int

    public init(length: Int, chunkSize: Int) {
        precondition(length >= 0 && chunkSize > 0)
        self.length = length
        self.chunkSize = chunkSize
    }

    public var startIndex: Int { 0 }
    public var endIndex: Int { length == 0 ? 0 : (length - 1) / chunkSize + 1 }
    public subscript(i: Int) -> Range<Int> {
        precondition(i >= 0 && i < endIndex)
        let start = i * chunkSize
        return start..<Swift.min(start + chunkSize, length)
    }
}
