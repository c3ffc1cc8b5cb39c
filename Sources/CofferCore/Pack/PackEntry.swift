/// What a blob holds. The raw values are part of the format.
public enum BlobType: UInt8, Sendable, Hashable, CaseIterable {
    /// A chunk of a file's contents.
    case data = 1
    /// A directory listing (tree) of a snapshot.
    case tree = 2
}

/// One blob of a pack, as listed in the pack header and copied into the index.
public struct PackEntry: Sendable, Hashable {
    // Stored compactly (56 bytes instead of 80): a first backup keeps one entry per new blob in
    // memory until the end of the run, so this is part of its peak memory. Every field fits in 32
    // bits by the format's limits (``PackFormat``: packs of at most 4 GiB, at most 2^32 blobs),
    // and an index or pack header cannot encode anything else; setting a number outside
    // 0...UInt32.max is a programming error and traps.
    public var id: ChunkID
    private var index32: UInt32
    private var uncompressedLength32: UInt32
    private var offset32: UInt32
    private var length32: UInt32
    public var type: BlobType
    public var compression: Compression

    /// Position in the pack (0-based); also the blob's AES-GCM nonce.
    public var index: Int {
        get { Int(index32) }
        set { index32 = UInt32(newValue) }
    }
    /// Length of the plaintext after decompression.
    public var uncompressedLength: Int {
        get { Int(uncompressedLength32) }
        set { uncompressedLength32 = UInt32(newValue) }
    }
    /// Offset of the blob's stored bytes (`ciphertext ‖ tag`) from the start of the pack.
    public var offset: Int {
        get { Int(offset32) }
        set { offset32 = UInt32(newValue) }
    }
    /// Length of the stored bytes, including the 16-byte tag.
    public var length: Int {
        get { Int(length32) }
        set { length32 = UInt32(newValue) }
    }

    /// - Precondition: every number is within the format's 32-bit limits (``PackFormat``).
    public init(index: Int, type: BlobType, id: ChunkID, compression: Compression,
                uncompressedLength: Int, offset: Int, length: Int) {
        self.id = id
        self.index32 = UInt32(index)
        self.uncompressedLength32 = UInt32(uncompressedLength)
        self.offset32 = UInt32(offset)
        self.length32 = UInt32(length)
        self.type = type
        self.compression = compression
    }

    /// The byte range of the stored blob within its pack (for a ranged read).
    public var range: Range<Int> { offset..<(offset + length) }
}

/// Fixed limits of the pack format (version 1).
public enum PackFormat {
    /// Largest blob plaintext (uncompressed). Chunks are at most 16 MiB; trees must be split below this.
    public static let maxBlobLength = 64 << 20
    /// Largest pack (offsets are 32-bit).
    public static let maxPackLength = Int(UInt32.max)
    /// Most blobs in one pack (nonces are the 32-bit blob index).
    public static let maxBlobCount = Int(UInt32.max)
    /// AES-GCM tag length.
    public static let tagLength = 16
    /// Size of the fixed trailer at the end of every pack.
    public static let trailerLength = 44
    /// Size of one header entry.
    static let entryLength = 48
    /// Size of the header's fixed part before the entries.
    static let headerFixedLength = 16
    static let magic: [UInt8] = Array("CFPK".utf8)
    /// A tail this long holds the whole header of packs with up to about 1300 blobs: read it with
    /// one ranged read of the last bytes, and read again only if ``PackTrailer/tailLength`` says more.
    public static let suggestedTailLength = 64 << 10

    static let dataKeyLabel = "coffer/v1/pack"
    static let headerKeyLabel = "coffer/v1/pack-header"
}
