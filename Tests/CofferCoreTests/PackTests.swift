import Testing
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
@testable @_spi(Testing) import CofferCore

@Suite struct PackTests {
    struct Blob { var type: BlobType; var plaintext: [UInt8]; var compress: Bool }

    func randomBlobs(_ rng: inout SeededRNG, count: Int, maxLength: Int) -> [Blob] {
        (0..<count).map { _ in
            let n = Int.random(in: 0...maxLength, using: &rng)
            let compressible = Bool.random(using: &rng)
            return Blob(type: Bool.random(using: &rng) ? .data : .tree,
                        plaintext: compressible ? rng.compressible(n) : rng.bytes(n),
                        compress: Bool.random(using: &rng))
        }
    }

    func build(_ blobs: [Blob], keys: RepositoryKeys = fixedKeys, salt: Data? = nil) throws -> FinishedPack {
        let w = salt.map { PackWriter(keys: keys, salt: $0) } ?? PackWriter(keys: keys)
        for b in blobs {
            try w.add(type: b.type, id: keys.chunkID(of: b.plaintext), plaintext: b.plaintext, compress: b.compress)
        }
        return w.finish()
    }

    @Test func propertyRoundTrip() throws {
        var rng = SeededRNG(seed: 42)
        let opener = BlobOpener(keys: fixedKeys)
        for _ in 0..<60 {
            let blobs = randomBlobs(&rng, count: Int.random(in: 0...20, using: &rng), maxLength: 20_000)
            let pack = try build(blobs)
            #expect(pack.id == ObjectID(hashing: pack.bytes))
            #expect(pack.id.verify(pack.bytes))
            let header = try PackHeader(pack: pack.bytes, keys: fixedKeys)
            #expect(header.entries == pack.entries)
            #expect(header.salt == pack.salt)
            #expect(header.packLength == pack.bytes.count)
            #expect(header.paddingLength == 0)
            // From a tail only, as a ranged read would fetch it.
            let tail = pack.bytes.suffix(min(pack.bytes.count, PackFormat.suggestedTailLength))
            let fromTail = try PackHeader(tail: tail, keys: fixedKeys, packLength: pack.bytes.count)
            #expect(fromTail.entries == pack.entries)
            for (b, e) in zip(blobs, header.entries) {
                #expect(e.type == b.type)
                #expect(e.uncompressedLength == b.plaintext.count)
                if !b.compress { #expect(e.compression == .none) }
                let plain = try opener.open(blob: e, inPack: pack.bytes, salt: header.salt)
                #expect(plain == Data(b.plaintext))
            }
        }
    }

    @Test func compressesOnlyWhenAskedAndWorthwhile() throws {
        var rng = SeededRNG(seed: 3)
        let text = rng.compressible(100_000), noise = rng.bytes(100_000)
        let pack = try build([Blob(type: .data, plaintext: text, compress: true),
                              Blob(type: .data, plaintext: noise, compress: true),
                              Blob(type: .data, plaintext: text, compress: false)])
        #expect(pack.entries.map(\.compression) == [.deflate, .none, .none])
        #expect(pack.entries[0].length < 100_000 * 7 / 8)
        #expect(pack.entries[1].length == 100_000 + 16)
    }

    @Test func precompressedPayloads() throws {
        var rng = SeededRNG(seed: 4)
        let text = rng.compressible(50_000)
        let c = try #require(Deflater().compressed(text))
        let w = PackWriter(keys: fixedKeys)
        let id = fixedKeys.chunkID(of: text)
        let e = try c.withUnsafeBytes { try w.add(type: .data, id: id, payload: $0, compression: .deflate, uncompressedLength: text.count) }
        #expect(throws: FormatError.self) {
            try text.withUnsafeBytes { try w.add(type: .data, id: id, payload: $0, compression: .none, uncompressedLength: 1) }
        }
        let pack = w.finish()
        #expect(try BlobOpener(keys: fixedKeys).open(blob: e, inPack: pack.bytes, salt: pack.salt) == Data(text))
    }

    @Test func freshSaltPerPack() throws {
        let blobs = [Blob(type: .data, plaintext: Array("same".utf8), compress: false)]
        let a = try build(blobs), b = try build(blobs)
        #expect(a.salt != b.salt)
        #expect(a.bytes != b.bytes)
    }

    /// Flipping any byte anywhere in a pack is detected: by the header read (header, trailer) or
    /// by opening the blob that contains it.
    @Test func everyFlippedByteIsDetected() throws {
        var rng = SeededRNG(seed: 5)
        let blobs = randomBlobs(&rng, count: 4, maxLength: 300)
        let pack = try build(blobs)
        let opener = BlobOpener(keys: fixedKeys)
        for i in 0..<pack.bytes.count {
            var b = pack.bytes
            b[i] ^= UInt8(1 << (i % 8))
            do {
                let header = try PackHeader(pack: b, keys: fixedKeys)
                // The header survived, so the flip is in a blob: that blob must fail, as auth failure.
                let hit = try #require(header.entries.first { $0.range.contains(i) }, "byte \(i) outside any blob")
                #expect(throws: FormatError(.authenticationFailed, "blob could not be decrypted: this key does not open it, or it was modified",
                                            object: "blob \(hit.id)")) {
                    try opener.open(blob: hit, inPack: b, salt: header.salt)
                }
                for e in header.entries where e != hit { _ = try opener.open(blob: e, inPack: b, salt: header.salt) }
            } catch let e as FormatError {
                #expect(i >= pack.entries.last.map { $0.offset + $0.length } ?? 0, "byte \(i): \(e)")
                #expect([.authenticationFailed, .malformed, .unsupportedVersion, .truncated].contains(e.code))
            }
        }
    }

    @Test func headerFailuresAreReportedPrecisely() throws {
        let pack = try build([Blob(type: .data, plaintext: Array("x".utf8), compress: false)])
        let n = pack.bytes.count
        var magic = pack.bytes; magic[n - 1] ^= 1
        #expect(throws: FormatError.self) { try PackHeader(pack: magic, keys: fixedKeys) }
        do { _ = try PackHeader(pack: magic, keys: fixedKeys) } catch { #expect(error.code == .malformed) }
        var version = pack.bytes; version[n - 44 + 33] = 2
        do { _ = try PackHeader(pack: version, keys: fixedKeys) } catch { #expect(error.code == .unsupportedVersion) }
        var salt = pack.bytes; salt[n - 44] ^= 1
        do { _ = try PackHeader(pack: salt, keys: fixedKeys) } catch { #expect(error.code == .authenticationFailed) }
        let other = RepositoryKeys(key: BackupKey(), repositoryID: fixedRepositoryID)
        do { _ = try PackHeader(pack: pack.bytes, keys: other); Issue.record("wrong key accepted") } catch {
            #expect(error.code == .authenticationFailed)
        }
        // Wrong key on a blob (with the right salt) fails authentication too.
        let e = pack.entries[0]
        do { _ = try BlobOpener(keys: other).open(blob: e, inPack: pack.bytes, salt: pack.salt); Issue.record("accepted") } catch {
            #expect(error.code == .authenticationFailed)
        }
    }

    @Test func truncationIsDetected() throws {
        var rng = SeededRNG(seed: 6)
        let pack = try build(randomBlobs(&rng, count: 3, maxLength: 500))
        for cut in [0, 1, 43, 44, 45, pack.bytes.count / 2, pack.bytes.count - 1] {
            #expect(throws: FormatError.self) { try PackHeader(pack: pack.bytes.prefix(cut), keys: fixedKeys) }
        }
        // Dropping bytes from the front leaves a valid tail but a wrong total length.
        #expect(throws: FormatError.self) { try PackHeader(pack: pack.bytes.dropFirst(), keys: fixedKeys) }
        #expect(throws: FormatError.self) { try PackHeader(tail: pack.bytes.dropFirst(), keys: fixedKeys, packLength: pack.bytes.count - 1) }
        // A tail too short for the header says how much is needed.
        let trailer = try PackTrailer(tail: pack.bytes.suffix(44))
        #expect(trailer.tailLength == pack.headerLength + 44)
        do { _ = try PackHeader(tail: pack.bytes.suffix(60), keys: fixedKeys); Issue.record("short tail accepted") } catch {
            #expect(error.code == .truncated)
        }
        // A short blob read.
        let e = pack.entries[1]
        #expect(throws: FormatError.self) {
            try BlobOpener(keys: fixedKeys).open(pack.bytes[e.offset..<(e.offset + e.length - 1)], entry: e, salt: pack.salt)
        }
    }

    /// The nonce (blob index) and AAD bind each blob to its place and entry: swapping two blobs'
    /// bytes, or presenting one blob under another's entry, fails authentication.
    @Test func swappedBlobsAreDetected() throws {
        let a = Array(repeating: UInt8(ascii: "a"), count: 100), b = Array(repeating: UInt8(ascii: "b"), count: 100)
        let pack = try build([Blob(type: .data, plaintext: a, compress: false), Blob(type: .data, plaintext: b, compress: false)])
        let (ea, eb) = (pack.entries[0], pack.entries[1])
        #expect(ea.length == eb.length)
        var swapped = pack.bytes
        swapped.replaceSubrange(ea.range, with: pack.bytes[eb.range])
        swapped.replaceSubrange(eb.range, with: pack.bytes[ea.range])
        let header = try PackHeader(pack: swapped, keys: fixedKeys)  // header untouched
        let opener = BlobOpener(keys: fixedKeys)
        for e in header.entries {
            do { _ = try opener.open(blob: e, inPack: swapped, salt: header.salt); Issue.record("swap accepted") } catch {
                #expect(error.code == .authenticationFailed)
            }
        }
        // Same bytes, entry with another type / id / index / compression: all rejected.
        var wrongType = ea; wrongType.type = .tree
        var wrongID = ea; wrongID.id = eb.id
        var wrongIndex = ea; wrongIndex.index = 1
        for e in [wrongType, wrongID, wrongIndex] {
            #expect(throws: FormatError.self) { try opener.open(pack.bytes[ea.range], entry: e, salt: pack.salt) }
        }
        // A blob moved into another pack (other salt) fails too.
        let other = try build([Blob(type: .data, plaintext: a, compress: false)])
        #expect(throws: FormatError.self) { try opener.open(pack.bytes[ea.range], entry: ea, salt: other.salt) }
    }

    @Test func idIsCheckedAfterDecryption() throws {
        // A writer holding the key but lying about the id (or a bug) is caught by the HMAC check.
        let w = PackWriter(keys: fixedKeys)
        let lie = fixedKeys.chunkID(of: Array("other".utf8))
        let e = try w.add(type: .data, id: lie, plaintext: Array("content".utf8), compress: false)
        let pack = w.finish()
        do { _ = try BlobOpener(keys: fixedKeys).open(blob: e, inPack: pack.bytes, salt: pack.salt); Issue.record("accepted") } catch {
            #expect(error.code == .idMismatch)
        }
    }

    @Test func headerPaddingRoundTrips() throws {
        let w = PackWriter(keys: fixedKeys)
        try w.add(type: .data, id: fixedKeys.chunkID(of: [1, 2, 3]), plaintext: [1, 2, 3] as [UInt8], compress: false)
        w.setPadding(1000)
        let pack = w.finish()
        let h = try PackHeader(pack: pack.bytes, keys: fixedKeys)
        #expect(h.paddingLength == 1000)
        #expect(pack.bytes.count == 3 + 16 + 16 + 48 + 1000 + 16 + 44)
    }

    @Test func rejectsOversizedBlobs() {
        let w = PackWriter(keys: fixedKeys)
        let big = [UInt8](repeating: 0, count: PackFormat.maxBlobLength + 1)
        #expect(throws: FormatError.self) { try w.add(type: .data, id: fixedKeys.chunkID(of: big), plaintext: big, compress: false) }
    }
}

@Suite struct HeaderParsingTests {
    /// The decrypted header is validated field by field (only a key holder could write one, but a
    /// buggy writer must not make a reader misbehave).
    func header(count: UInt32 = 1, padding: [UInt8] = [], entry: (inout [UInt8]) -> Void = { _ in }) -> [UInt8] {
        var w = ByteWriter()
        w.u16(1); w.u16(0); w.u32(count); w.u32(UInt32(padding.count)); w.u32(0)
        var e = ByteWriter()
        e.u8(1); e.u8(0); e.u16(0); e.u32(10); e.u32(0); e.u32(26)
        e.raw([UInt8](repeating: 9, count: 32))
        var eb = e.bytes
        entry(&eb)
        w.raw(eb)
        w.raw(padding)
        return w.bytes
    }

    func parse(_ b: [UInt8]) throws(FormatError) -> [PackEntry] {
        try b.withRawBytes { (raw) throws(FormatError) -> [PackEntry] in try PackHeader.parse(raw).entries }
    }

    @Test func validatesEveryField() throws {
        #expect(try parse(header()).count == 1)
        #expect(try parse(header(padding: [UInt8](repeating: 0, count: 1001))).count == 1)
        let bad: [(String, [UInt8])] = [
            ("non-zero padding", header(padding: [UInt8](repeating: 0, count: 1000) + [1] + [UInt8](repeating: 0, count: 20))),
            ("count too high", header(count: 2)),
            ("count too low", header(count: 0)),
            ("unknown type", header { $0[0] = 3 }),
            ("unknown compression", header { $0[1] = 2 }),
            ("reserved", header { $0[3] = 1 }),
            ("offset not contiguous", header { $0[11] = 1 }),
            ("length below tag", header { $0[15] = 15 }),
            ("stored length mismatch", header { $0[15] = 27 }),
            ("empty compressed", header { $0[1] = 1; $0[7] = 0 }),
            ("version", { var h = header(); h[1] = 2; return h }()),
            ("flags", { var h = header(); h[3] = 1; return h }()),
            ("short", Array(header().prefix(10))),
        ]
        for (what, bytes) in bad {
            #expect(throws: FormatError.self, "\(what)") { try parse(bytes) }
        }
    }
}

@Suite struct PackWriterParametersTests {
    @Test func followsRepositoryCompressionSetting() throws {
        var rng = SeededRNG(seed: 8)
        let text = rng.compressible(50_000)
        let id = fixedKeys.chunkID(of: text)
        let on = PackWriter(keys: fixedKeys, parameters: .default)
        #expect(try on.add(type: .data, id: id, plaintext: text, compress: true).compression == .deflate)
        let off = PackWriter(keys: fixedKeys, parameters: .init(compression: .none))
        #expect(try off.add(type: .data, id: id, plaintext: text, compress: true).compression == .none)
        let level9 = PackWriter(keys: fixedKeys, parameters: .init(compressionLevel: 9))
        let e9 = try level9.add(type: .data, id: id, plaintext: text, compress: true)
        let p = level9.finish()
        #expect(try BlobOpener(keys: fixedKeys).open(blob: e9, inPack: p.bytes, salt: p.salt) == Data(text))
    }
}
