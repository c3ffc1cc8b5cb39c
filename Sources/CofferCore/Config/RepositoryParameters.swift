/// How a repository chunks, packs, compresses and pads. Fixed when the repository is created and
/// stored (authenticated) in its config; every writer follows them.
public struct RepositoryParameters: Sendable, Hashable {
    /// Chunk size for files other than SQLite databases (media never changes once written, so
    /// fixed-size chunks deduplicate as well as anything).
    public var fileChunkSize: Int
    /// Size of a group of SQLite pages (one chunk). A power of two; pages larger than it make one
    /// chunk each.
    public var sqliteGroupSize: Int
    /// A pack is closed once it reaches this size.
    public var targetPackSize: Int
    /// Compression of compressible blobs (used only when it saves at least 1/8).
    public var compression: Compression
    /// zlib level for ``Compression/deflate``.
    public var compressionLevel: Int
    /// Padding of packs and sealed objects (Part B of the design). Always ``PaddingScheme/none``
    /// in format version 1 writers; readers accept the field.
    public var padding: PaddingScheme
    /// Smallest padded size in bytes (Part B; 0 with no padding).
    public var paddingFloor: Int

    public init(fileChunkSize: Int = 1 << 20, sqliteGroupSize: Int = 1 << 16, targetPackSize: Int = 8 << 20,
                compression: Compression = .deflate, compressionLevel: Int = 1,
                padding: PaddingScheme = .none, paddingFloor: Int = 0) {
        self.fileChunkSize = fileChunkSize
        self.sqliteGroupSize = sqliteGroupSize
        self.targetPackSize = targetPackSize
        self.compression = compression
        self.compressionLevel = compressionLevel
        self.padding = padding
        self.paddingFloor = paddingFloor
    }

    /// The defaults: 1 MiB file chunks, 64 KiB SQLite groups, 8 MiB packs, deflate level 1, no padding.
    public static let `default` = RepositoryParameters()

    /// Fixed bounds, enforced when creating and when opening a repository. A config outside them is
    /// rejected, so a hostile or broken config cannot make a device allocate absurd buffers.
    public enum Bounds {
        public static let fileChunkSize = (64 << 10)...(16 << 20)
        public static let sqliteGroupSize = (4 << 10)...(1 << 20)
        public static let targetPackSize = (1 << 20)...(256 << 20)
        public static let compressionLevel = 1...9
        public static let paddingFloor = 0...(64 << 20)
    }

    /// - Throws: ``ConfigError/parameterOutOfBounds(name:value:allowed:)`` for the first offending field.
    public func validate() throws(ConfigError) {
        func check(_ name: String, _ v: Int, _ r: ClosedRange<Int>) throws(ConfigError) {
            guard r.contains(v) else {
                throw .parameterOutOfBounds(name: name, value: v, allowed: "\(r.lowerBound)...\(r.upperBound)")
            }
        }
        try check("file chunk size", fileChunkSize, Bounds.fileChunkSize)
        guard fileChunkSize % 4096 == 0 else {
            throw .parameterOutOfBounds(name: "file chunk size", value: fileChunkSize, allowed: "a multiple of 4096")
        }
        try check("SQLite group size", sqliteGroupSize, Bounds.sqliteGroupSize)
        guard sqliteGroupSize & (sqliteGroupSize - 1) == 0 else {
            throw .parameterOutOfBounds(name: "SQLite group size", value: sqliteGroupSize, allowed: "a power of two")
        }
        try check("target pack size", targetPackSize, Bounds.targetPackSize)
        try check("compression level", compressionLevel, Bounds.compressionLevel)
        try check("padding floor", paddingFloor, Bounds.paddingFloor)
        if padding == .none, paddingFloor != 0 {
            throw .parameterOutOfBounds(name: "padding floor", value: paddingFloor, allowed: "0 without padding")
        }
    }
}

/// How objects are padded to hide their sizes (Part B). The raw values are part of the format.
public enum PaddingScheme: UInt8, Sendable, Hashable, CaseIterable {
    /// No padding (format version 1 writers).
    case none = 0
    /// Padmé sizes with a floor (reserved for Part B; readers honour the padding fields already).
    case padme = 1
}
