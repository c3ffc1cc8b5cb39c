/// What a blob holds. The raw values are part of the format.
public enum BlobType: UInt8, Sendable, Hashable, CaseIterable {
    /// A chunk of a file's contents.
    case data = 1
    /// A directory listing (tree) of a snapshot.
    case tree = 2
}

/// One blob of a pack, as listed in the pack header and copied into the index.
public struct PackEntry: Sendable, Hashable {
    /// Position in the pack (0-based); also the blob's AES-GCM nonce.
    public var index: Int
    public var type: BlobType
    public var id: ChunkID
    public var compression: Compression
    /// Length of the plaintext after decompression.
    public var uncompressedLength: Int
    /// Offset of the blob's stored bytes (`ciphertext ‖ tag`) from the start of the pack.
    public var offset: Int
    /// Length of the stored bytes, including the 16-byte tag.
    public var length: Int

    public init(index: Int, type: BlobType, id: ChunkID, compression: Compression,
                uncompressedLength: Int, offset: Int, length: Int) {
        self.index = index
        self.type = type
        self.id = id
        self.compression = compression
        self.uncompressedLength = uncompressedLength
        self.offset = offset
        self.length = length
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
