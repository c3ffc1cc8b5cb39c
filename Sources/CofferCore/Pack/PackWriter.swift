#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Crypto

/// Builds one pack: blobs encrypted one after another, then the encrypted header, then the trailer
/// (docs/FORMAT.md, "Packs").
///
/// Each pack draws a fresh 32-byte salt, so its keys are new and blob nonces (the blob's index)
/// never repeat under a key. A retried upload must resend the finished bytes, never rebuild them.
/// Not thread-safe: one writer per task; run several writers to use several cores.
public final class PackWriter {
    /// The pack's salt (32 bytes); the index records it so a blob can be opened without the trailer.
    public let salt: Data
    private let cipher: PackCipher
    private let deflater: Deflater
    /// Page-aligned, so that a folder repository can write the finished pack without a copy (``AlignedBuffer``).
    private var buffer: AlignedBuffer
    /// Set by tests (vectors) to force a padding length; otherwise ``padding`` decides at finish.
    private var explicitPadding: Int?
    /// How the finished pack is padded (inside the header's AEAD): its total size becomes
    /// `padding.paddedLength(unpadded size)`.
    public let padding: PaddingPolicy
    /// False when the repository's parameters say `compression = none`: `compress: true` is ignored.
    private var compressionEnabled = true
    private var finished = false
    /// The blobs written so far, in order.
    public private(set) var entries: [PackEntry] = []

    /// - Parameters:
    ///   - keys: the repository's subkeys.
    ///   - compressionLevel: zlib level for blobs added with `compress: true`.
    ///   - expectedSize: capacity to reserve (the repository's target pack size).
    ///   - padding: how the finished pack is padded (the repository's ``PaddingPolicy``).
    public convenience init(keys: RepositoryKeys, compressionLevel: Int = 1, expectedSize: Int = 8 << 20,
                            padding: PaddingPolicy = .none) {
        var rng = SystemRandomNumberGenerator()
        let salt = Data((0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) })
        self.init(keys: keys, salt: salt, compressionLevel: compressionLevel, expectedSize: expectedSize, padding: padding)
    }

    /// A writer following the repository's parameters: compression on or off, its zlib level,
    /// padding, and a buffer sized for the target pack size.
    public convenience init(keys: RepositoryKeys, parameters: RepositoryParameters) {
        self.init(keys: keys, compressionLevel: parameters.compressionLevel, expectedSize: parameters.targetPackSize,
                  padding: PaddingPolicy(parameters: parameters))
        compressionEnabled = parameters.compression != .none
    }

    /// A writer with a chosen salt: only for test vectors (a repeated salt would repeat nonces).
    @_spi(Testing)
    public init(keys: RepositoryKeys, salt: Data, compressionLevel: Int = 1, expectedSize: Int = 1 << 20,
                padding: PaddingPolicy = .none) {
        precondition(salt.count == 32)
        self.salt = salt
        self.padding = padding
        cipher = salt.withUnsafeBytes { PackCipher(keys: keys, salt: $0) }
        deflater = Deflater(level: compressionLevel)
        // Room for the header (64 KiB) and the padding of a full pack, so that finishing a pack
        // never reallocates (and copies) its buffer.
        buffer = AlignedBuffer(capacity: padding.paddedLength(expectedSize + (64 << 10)))
    }

    deinit {
        if !finished { buffer.deallocate() }  // finish() handed the memory to the pack's Data
    }

    /// Bytes of blobs written so far (the finished pack adds the header and trailer).
    public var byteCount: Int { buffer.count }
    public var blobCount: Int { entries.count }

    /// Sets the header's padding length (Part B; zero bytes inside the header AEAD).
    @_spi(Testing)
    public func setPadding(_ length: Int) { explicitPadding = length }

    /// The size the pack would have if finished now without padding: blobs, header (fixed part,
    /// one entry per blob, tag) and trailer.
    public var unpaddedLength: Int {
        buffer.count + PackFormat.headerFixedLength + entries.count * PackFormat.entryLength
            + PackFormat.tagLength + PackFormat.trailerLength
    }

    /// Adds a blob: compresses it if asked and worthwhile (saves at least 1/8), encrypts it, appends it.
    /// - Parameters:
    ///   - id: `keys.chunkID(of: plaintext)`, computed by the caller (which deduplicates by it).
    ///   - compress: try compression (for the database; media is not worth trying).
    /// - Returns: the entry, with offset and length in this pack.
    /// - Throws: ``FormatError`` `.tooLarge` when the blob or the pack exceeds the format's limits.
    @discardableResult
    public func add(type: BlobType, id: ChunkID, plaintext: UnsafeRawBufferPointer, compress: Bool) throws(FormatError) -> PackEntry {
        guard plaintext.count <= PackFormat.maxBlobLength else {
            throw FormatError(.tooLarge, "blob of \(plaintext.count) bytes exceeds the \(PackFormat.maxBlobLength)-byte limit")
        }
        if compress && compressionEnabled {
            return try deflater.compress(plaintext) { (c) throws(FormatError) -> PackEntry in
                if let c {
                    return try append(type: type, id: id, payload: c, compression: .deflate, uncompressedLength: plaintext.count)
                }
                return try append(type: type, id: id, payload: plaintext, compression: .none, uncompressedLength: plaintext.count)
            }
        }
        return try append(type: type, id: id, payload: plaintext, compression: .none, uncompressedLength: plaintext.count)
    }

    /// Adds a blob from any contiguous bytes (`Data`, `[UInt8]`); see the `UnsafeRawBufferPointer` variant.
    @discardableResult
    public func add(type: BlobType, id: ChunkID, plaintext: some ContiguousBytes, compress: Bool) throws(FormatError) -> PackEntry {
        try plaintext.withRawBytes { (raw) throws(FormatError) -> PackEntry in
            try add(type: type, id: id, plaintext: raw, compress: compress)
        }
    }

    /// Adds a blob whose payload the caller already compressed (compression in parallel workers).
    /// - Parameters:
    ///   - payload: the raw-deflate stream (``Compression/deflate``) or the plaintext (``Compression/none``).
    ///   - uncompressedLength: the plaintext's length.
    @discardableResult
    public func add(type: BlobType, id: ChunkID, payload: UnsafeRawBufferPointer, compression: Compression,
                    uncompressedLength: Int) throws(FormatError) -> PackEntry {
        guard uncompressedLength <= PackFormat.maxBlobLength, uncompressedLength >= 0 else {
            throw FormatError(.tooLarge, "blob of \(uncompressedLength) bytes exceeds the \(PackFormat.maxBlobLength)-byte limit")
        }
        if compression == .none, payload.count != uncompressedLength {
            throw FormatError(.malformed, "an uncompressed payload must be exactly its uncompressed length")
        }
        if compression == .deflate, uncompressedLength == 0 || payload.isEmpty {
            throw FormatError(.malformed, "a compressed blob cannot be empty")
        }
        return try append(type: type, id: id, payload: payload, compression: compression, uncompressedLength: uncompressedLength)
    }

    private func append(type: BlobType, id: ChunkID, payload: UnsafeRawBufferPointer, compression: Compression,
                        uncompressedLength: Int) throws(FormatError) -> PackEntry {
        precondition(!finished, "PackWriter used after finish()")
        guard entries.count < PackFormat.maxBlobCount else {
            throw FormatError(.tooLarge, "a pack holds at most \(PackFormat.maxBlobCount) blobs")
        }
        let length = payload.count + PackFormat.tagLength
        guard buffer.count + length + PackFormat.trailerLength + PackFormat.headerFixedLength
                + (entries.count + 1) * PackFormat.entryLength + PackFormat.tagLength <= PackFormat.maxPackLength else {
            throw FormatError(.tooLarge, "pack would exceed \(PackFormat.maxPackLength) bytes")
        }
        let entry = PackEntry(index: entries.count, type: type, id: id, compression: compression,
                              uncompressedLength: uncompressedLength, offset: buffer.count, length: length)
        let aad = PackCipher.blobAAD(type: type, id: id, compression: compression, uncompressedLength: uncompressedLength)
        aad.withUnsafeBytes { a in
            aeadSeal(payload, key: cipher.blobKey, nonce: counterNonce(UInt32(entry.index)), aad: a, appendingTo: &buffer)
        }
        entries.append(entry)
        return entry
    }

    /// Appends the encrypted header and the trailer and returns the finished pack with its name.
    /// The writer cannot be used afterwards.
    public func finish() -> FinishedPack { finishUnnamed().named() }

    /// Appends the encrypted header and the trailer and returns the pack without its name (the
    /// SHA-256 of its bytes): a backup names its packs in the upload tasks, so that a worker holds
    /// an open pack only to append (PackPool). The writer cannot be used afterwards.
    package func finishUnnamed() -> UnnamedPack {
        precondition(!finished, "PackWriter.finish() called twice")
        finished = true
        let unpadded = unpaddedLength
        let paddingLength = explicitPadding
            ?? max(0, min(padding.paddedLength(unpadded), PackFormat.maxPackLength) - unpadded)
        var h = ByteWriter(capacity: PackFormat.headerFixedLength + entries.count * PackFormat.entryLength + paddingLength)
        h.u16(FormatVersion.current)
        h.u16(0)  // flags
        h.u32(UInt32(entries.count))
        h.u32(UInt32(paddingLength))
        h.u32(0)  // reserved
        for e in entries {
            h.u8(e.type.rawValue)
            h.u8(e.compression.rawValue)
            h.u16(0)
            h.u32(UInt32(e.uncompressedLength))
            h.u32(UInt32(e.offset))
            h.u32(UInt32(e.length))
            e.id.withUnsafeBytes { h.raw($0) }
        }
        h.zeros(paddingLength)
        let headerLength = h.bytes.count + PackFormat.tagLength
        let trailer = PackTrailer.encode(salt: salt, headerLength: headerLength)
        h.bytes.withUnsafeBytes { p in
            trailer.withUnsafeBytes { a in
                aeadSeal(p, key: cipher.headerKey, nonce: counterNonce(0), aad: a, appendingTo: &buffer)
            }
        }
        trailer.withUnsafeBytes { buffer.append($0) }
        return UnnamedPack(bytes: buffer.takeData(), salt: salt, entries: entries, headerLength: headerLength)
    }
}

/// A finished pack whose name is not computed yet (``PackWriter/finishUnnamed()``).
package struct UnnamedPack: Sendable {
    package let bytes: Data
    package let salt: Data
    package let entries: [PackEntry]
    package let headerLength: Int

    /// The pack with its name: the SHA-256 of its bytes (one pass over them).
    package func named() -> FinishedPack {
        let id = bytes.withUnsafeBytes { ObjectID(digest: SHA256Digest.compute($0)) }
        return FinishedPack(bytes: bytes, id: id, salt: salt, entries: entries, headerLength: headerLength)
    }
}

/// A pack ready to upload.
public struct FinishedPack: Sendable {
    /// The pack's bytes, exactly as stored.
    public let bytes: Data
    /// Its name: SHA-256 of ``bytes``.
    public let id: ObjectID
    /// Its salt (also in the trailer).
    public let salt: Data
    /// Its blobs, in order, for the index.
    public let entries: [PackEntry]
    /// Length of the encrypted header (including its tag).
    public let headerLength: Int
}
