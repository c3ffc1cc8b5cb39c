#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Crypto

/// The fixed 44-byte trailer that ends every pack: `salt (32) ‖ version (u16) ‖ flags (u16) ‖
/// header length (u32) ‖ "CFPK"`. Unauthenticated by itself but bound as AAD of the header.
public struct PackTrailer: Sendable, Hashable {
    public let salt: Data
    public let formatVersion: UInt16
    /// Length of the encrypted header (including its tag) just before the trailer.
    public let headerLength: Int

    /// How many bytes at the end of the pack hold the header and the trailer.
    public var tailLength: Int { headerLength + PackFormat.trailerLength }

    /// Parses the trailer from the last 44 bytes of `tail` (the end of a pack, of any length ≥ 44).
    /// - Throws: ``FormatError`` `.truncated`, `.malformed` or `.unsupportedVersion`.
    public init(tail: some ContiguousBytes) throws(FormatError) {
        self = try tail.withRawBytes { (raw) throws(FormatError) -> PackTrailer in try PackTrailer(raw) }
    }

    init(_ raw: UnsafeRawBufferPointer) throws(FormatError) {
        guard raw.count >= PackFormat.trailerLength else {
            throw FormatError(.truncated, "pack is \(raw.count) bytes, shorter than its \(PackFormat.trailerLength)-byte trailer")
        }
        var r = ByteReader(UnsafeRawBufferPointer(rebasing: raw[(raw.count - PackFormat.trailerLength)...]))
        let salt = Data(r.bytes(32)!)
        let version = r.u16()!
        let flags = r.u16()!
        let headerLength = Int(r.u32()!)
        let magic = r.bytes(4)!
        guard magic.elementsEqual(PackFormat.magic) else {
            throw FormatError(.malformed, "not a Coffer pack (bad trailer magic)")
        }
        guard version == FormatVersion.current else {
            throw FormatError(.unsupportedVersion, "pack format version \(version) is not supported by this version of Coffer")
        }
        guard flags == 0 else { throw FormatError(.malformed, "pack trailer has unknown flags \(flags)") }
        guard headerLength >= PackFormat.headerFixedLength + PackFormat.tagLength else {
            throw FormatError(.malformed, "pack header length \(headerLength) is too small")
        }
        self.salt = salt
        self.formatVersion = version
        self.headerLength = headerLength
    }

    static func encode(salt: Data, headerLength: Int) -> [UInt8] {
        var w = ByteWriter(capacity: PackFormat.trailerLength)
        w.raw(salt)
        w.u16(FormatVersion.current)
        w.u16(0)
        w.u32(UInt32(headerLength))
        w.raw(PackFormat.magic)
        return w.bytes
    }
}

/// A pack's decrypted and validated header: its salt and the list of its blobs.
public struct PackHeader: Sendable {
    public let salt: Data
    public let entries: [PackEntry]
    /// Length of the encrypted header including its tag.
    public let headerLength: Int
    /// Length of the blob region (where the header starts).
    public let blobsLength: Int
    /// Padding inside the header (Part B; zero in version 1 writers).
    public let paddingLength: Int

    /// The pack's total size: blobs, header and trailer.
    public var packLength: Int { blobsLength + headerLength + PackFormat.trailerLength }

    /// Reads the header from the whole pack; also checks that the blobs fill the pack exactly.
    /// - Throws: ``FormatError``: `.truncated`, `.malformed`, `.unsupportedVersion`, `.authenticationFailed`.
    public init(pack: some ContiguousBytes, keys: RepositoryKeys) throws(FormatError) {
        self = try pack.withRawBytes { (raw) throws(FormatError) -> PackHeader in
            let h = try PackHeader(tail: raw, keys: keys)
            guard h.packLength == raw.count else {
                throw FormatError(.malformed, "pack is \(raw.count) bytes but its header describes \(h.packLength)")
            }
            return h
        }
    }

    /// Reads the header from the last bytes of a pack (one ranged read of
    /// ``PackFormat/suggestedTailLength`` usually suffices; if not, the error is `.truncated` and
    /// ``PackTrailer/tailLength`` of the same bytes says how many to read).
    /// - Parameters:
    ///   - tail: the final bytes of the pack, at least ``PackTrailer/tailLength`` of them.
    ///   - packLength: the pack's size when known (from a listing): checked against the entries.
    public init(tail: some ContiguousBytes, keys: RepositoryKeys, packLength: Int? = nil) throws(FormatError) {
        self = try tail.withRawBytes { (raw) throws(FormatError) -> PackHeader in
            let h = try PackHeader(tail: raw, keys: keys)
            if let packLength, h.packLength != packLength {
                throw FormatError(.malformed, "pack is \(packLength) bytes but its header describes \(h.packLength)")
            }
            return h
        }
    }

    init(tail raw: UnsafeRawBufferPointer, keys: RepositoryKeys) throws(FormatError) {
        let trailer = try PackTrailer(raw)
        guard raw.count >= trailer.tailLength else {
            throw FormatError(.truncated, "need the last \(trailer.tailLength) bytes of the pack to read its header, have \(raw.count)")
        }
        let trailerStart = raw.count - PackFormat.trailerLength
        let sealed = UnsafeRawBufferPointer(rebasing: raw[(trailerStart - trailer.headerLength)..<trailerStart])
        let aad = UnsafeRawBufferPointer(rebasing: raw[trailerStart...])
        let cipher = trailer.salt.withUnsafeBytes { PackCipher(keys: keys, salt: $0) }
        guard let plain = aeadOpen(sealed, key: cipher.headerKey, nonce: counterNonce(0), aad: aad) else {
            throw FormatError.authentication("pack header")
        }
        var parsed: (entries: [PackEntry], padding: Int, blobsLength: Int)!
        try plain.withRawBytes { (p) throws(FormatError) in
            parsed = try Self.parse(p)
        }
        salt = trailer.salt
        entries = parsed.entries
        paddingLength = parsed.padding
        blobsLength = parsed.blobsLength
        headerLength = trailer.headerLength
    }

    /// Validates the decrypted header. Authenticated, so only a key holder could have written
    /// anything odd here; still checked so that a buggy writer cannot make a reader misbehave.
    static func parse(_ p: UnsafeRawBufferPointer) throws(FormatError) -> (entries: [PackEntry], padding: Int, blobsLength: Int) {
        var r = ByteReader(p)
        guard let version = r.u16(), let flags = r.u16(), let count = r.u32(), let padding = r.u32(),
              let reserved = r.u32() else {
            throw FormatError(.malformed, "pack header too short")
        }
        guard version == FormatVersion.current else {
            throw FormatError(.unsupportedVersion, "pack header version \(version) is not supported")
        }
        guard flags == 0, reserved == 0 else { throw FormatError(.malformed, "pack header has unknown flags") }
        let expected = PackFormat.headerFixedLength + Int(count) * PackFormat.entryLength + Int(padding)
        guard expected == p.count else {
            throw FormatError(.malformed, "pack header is \(p.count) bytes, its counts say \(expected)")
        }
        var entries = [PackEntry]()
        entries.reserveCapacity(Int(count))
        var offset = 0
        for i in 0..<Int(count) {
            let typeRaw = r.u8()!, compRaw = r.u8()!, res = r.u16()!
            let ulen = Int(r.u32()!), off = Int(r.u32()!), len = Int(r.u32()!)
            let id = ChunkID(digest: Digest256(r.bytes(32)!))
            guard let type = BlobType(rawValue: typeRaw), let comp = Compression(rawValue: compRaw), res == 0 else {
                throw FormatError(.malformed, "pack header entry \(i) has an unknown type or compression")
            }
            guard off == offset, len >= PackFormat.tagLength, ulen <= PackFormat.maxBlobLength,
                  len - PackFormat.tagLength <= PackFormat.maxBlobLength else {
                throw FormatError(.malformed, "pack header entry \(i) has an impossible offset or length")
            }
            switch comp {
            case .none:
                guard ulen == len - PackFormat.tagLength else {
                    throw FormatError(.malformed, "pack header entry \(i): stored length does not match")
                }
            case .deflate:
                guard ulen > 0, len > PackFormat.tagLength else {
                    throw FormatError(.malformed, "pack header entry \(i): empty compressed blob")
                }
            }
            entries.append(PackEntry(index: i, type: type, id: id, compression: comp, uncompressedLength: ulen,
                                     offset: off, length: len))
            offset += len
        }
        guard allZero(r.bytes(Int(padding))!) else { throw FormatError(.malformed, "pack header padding is not zero") }
        return (entries, Int(padding), offset)
    }
}

/// Decrypts blobs. Keeps one inflater and the keys of the last pack used; not thread-safe (one per
/// worker).
public final class BlobOpener {
    private let keys: RepositoryKeys
    private let inflater = Inflater()
    private var lastSalt = Data()
    private var lastCipher: PackCipher?

    public init(keys: RepositoryKeys) { self.keys = keys }

    /// Decrypts, decompresses and checks one blob.
    /// - Parameters:
    ///   - sealed: exactly the blob's stored bytes (`entry.range` of the pack).
    ///   - entry: its entry from the pack header or the index.
    ///   - salt: the pack's salt (from the index or the trailer).
    /// - Returns: the plaintext, `entry.uncompressedLength` bytes whose HMAC is `entry.id`.
    /// - Throws: ``FormatError``: `.truncated` (wrong length), `.authenticationFailed` (wrong key,
    ///   modified bytes, or bytes of another blob), `.decompressionFailed`, `.idMismatch`.
    public func open(_ sealed: UnsafeRawBufferPointer, entry: PackEntry, salt: Data) throws(FormatError) -> Data {
        // Only for errors: formatting the id for every blob opened cost a string per blob.
        var what: String { "blob \(entry.id)" }
        guard sealed.count == entry.length else {
            throw FormatError(.truncated, "stored blob is \(sealed.count) bytes, expected \(entry.length)", object: what)
        }
        guard entry.index >= 0, entry.index < PackFormat.maxBlobCount,
              entry.uncompressedLength >= 0, entry.uncompressedLength <= PackFormat.maxBlobLength else {
            throw FormatError(.malformed, "impossible blob entry", object: what)
        }
        let cipher: PackCipher
        if let c = lastCipher, lastSalt == salt {
            cipher = c
        } else {
            guard salt.count == 32 else { throw FormatError(.malformed, "a pack salt is 32 bytes", object: what) }
            cipher = salt.withUnsafeBytes { PackCipher(keys: keys, salt: $0) }
            lastCipher = cipher
            lastSalt = salt
        }
        let aad = PackCipher.blobAAD(type: entry.type, id: entry.id, compression: entry.compression,
                                     uncompressedLength: entry.uncompressedLength)
        let opened = aad.withUnsafeBytes { a in
            aeadOpen(sealed, key: cipher.blobKey, nonce: counterNonce(UInt32(entry.index)), aad: a)
        }
        guard let opened else {
            var e = FormatError.authentication("blob")
            e.object = what
            throw e
        }
        let plain: Data
        switch entry.compression {
        case .none:
            guard opened.count == entry.uncompressedLength else {
                throw FormatError(.malformed, "blob length does not match its entry", object: what)
            }
            plain = opened
        case .deflate:
            do throws(FormatError) {
                plain = try opened.withRawBytes { (c) throws(FormatError) -> Data in
                    try inflater.decompress(c, expectedLength: entry.uncompressedLength)
                }
            } catch {
                var e = error
                e.object = what
                throw e
            }
        }
        // AES-GCM does not commit to its key; the keyed id does.
        guard keys.chunkID(of: plain).constantTimeEquals(entry.id) else {
            throw FormatError(.idMismatch, "decrypted blob does not match its id", object: what)
        }
        return plain
    }

    /// Decrypts one blob from any contiguous bytes; see the `UnsafeRawBufferPointer` variant.
    public func open(_ sealed: some ContiguousBytes, entry: PackEntry, salt: Data) throws(FormatError) -> Data {
        try sealed.withRawBytes { (raw) throws(FormatError) -> Data in try open(raw, entry: entry, salt: salt) }
    }

    /// Decrypts a blob given the whole pack (slices `entry.range` out of it).
    public func open(blob entry: PackEntry, inPack pack: some ContiguousBytes, salt: Data) throws(FormatError) -> Data {
        try pack.withRawBytes { (raw) throws(FormatError) -> Data in
            guard entry.offset >= 0, entry.length >= 0, entry.offset <= raw.count, entry.length <= raw.count - entry.offset else {
                throw FormatError(.truncated, "pack too short for blob at \(entry.offset)+\(entry.length)", object: "blob \(entry.id)")
            }
            return try open(UnsafeRawBufferPointer(rebasing: raw[entry.range]), entry: entry, salt: salt)
        }
    }
}
