#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CZlib

/// How a payload is stored. The raw values are part of the format.
public enum Compression: UInt8, Sendable, Hashable, CaseIterable {
    /// Stored as is.
    case none = 0
    /// Raw DEFLATE (RFC 1951, no zlib or gzip wrapper).
    case deflate = 1
}

/// Raw-DEFLATE compressor that keeps one compressor state (a zlib stream or a libdeflate
/// compressor, see ``DeflateEngine``) and one output buffer for its whole life (allocations over
/// 128 KiB freed each time cost a page-faulting `mmap` per use on Linux).
///
/// Not thread-safe: use one per worker.
public final class Deflater {
    /// Inputs shorter than this are never compressed: too little to gain.
    public static let minimumInput = 64

    private let stream: UnsafeMutablePointer<z_stream>?
    private let fast: (lib: LibDeflate, compressor: OpaquePointer)?
    private var output: [UInt8] = []
    public let level: Int
    public let engine: DeflateEngine

    /// - Parameters:
    ///   - level: 1...9 (the format default is 1: fast, and the database still compresses well);
    ///     both engines take it as their own level of that number.
    ///   - engine: which implementation; ``DeflateEngine/preferred`` unless a caller compares them.
    ///     An engine that is not available falls back to zlib.
    public init(level: Int = 1, engine: DeflateEngine = .preferred) {
        precondition((1...9).contains(level), "compression level must be 1...9")
        self.level = level
        if engine == .libdeflate, let lib = LibDeflate.shared, let c = lib.allocCompressor(Int32(level)) {
            fast = (lib, c)
            stream = nil
            self.engine = .libdeflate
            return
        }
        fast = nil
        self.engine = .zlib
        let stream = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
        stream.initialize(to: z_stream())
        // windowBits -15: raw deflate, 32 KiB window. memLevel 8 is zlib's default.
        let rc = deflateInit2_(stream, Int32(level), Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY,
                               zlibVersion(), Int32(MemoryLayout<z_stream>.size))
        precondition(rc == Z_OK, "deflateInit2 failed (\(rc)): out of memory")
        self.stream = stream
    }

    deinit {
        if let fast { fast.lib.freeCompressor(fast.compressor) }
        if let stream {
            deflateEnd(stream)
            stream.deinitialize(count: 1)
            stream.deallocate()
        }
    }

    /// The largest compressed size worth keeping for an input of `count` bytes: compression must
    /// save at least 1/8.
    public static func worthwhileLimit(_ count: Int) -> Int { count - (count + 7) / 8 }

    /// Compresses `input` and calls `body` with the compressed bytes if they save at least 1/8 of
    /// the input, or with `nil` if not (the caller then stores the input as is). The buffer passed
    /// to `body` is reused by the next call: do not let it escape.
    public func compress<R, E: Error>(_ input: UnsafeRawBufferPointer,
                                      _ body: (UnsafeRawBufferPointer?) throws(E) -> R) throws(E) -> R {
        let limit = Self.worthwhileLimit(input.count)
        guard input.count >= Self.minimumInput, limit > 0, input.count <= Int(UInt32.max) else {
            return try body(nil)
        }
        if output.count < limit { output = [UInt8](repeating: 0, count: limit) }
        let produced: Int? = output.withUnsafeMutableBytes { out in
            if let fast {
                // libdeflate returns 0 when the output does not fit in `limit` bytes: not worthwhile.
                let n = fast.lib.compress(fast.compressor, input.baseAddress, input.count, out.baseAddress, limit)
                return n > 0 ? n : nil
            }
            let stream = stream!
            deflateReset(stream)
            stream.pointee.next_in = UnsafeMutablePointer(mutating: input.baseAddress!.assumingMemoryBound(to: Bytef.self))
            stream.pointee.avail_in = uInt(input.count)
            stream.pointee.next_out = out.baseAddress!.assumingMemoryBound(to: Bytef.self)
            stream.pointee.avail_out = uInt(limit)
            // With the output capped at the limit, an incompressible input stops early.
            let rc = deflate(stream, Z_FINISH)
            defer {
                stream.pointee.next_in = nil
                stream.pointee.next_out = nil
            }
            guard rc == Z_STREAM_END else { return nil }
            return limit - Int(stream.pointee.avail_out)
        }
        guard let produced else { return try body(nil) }
        return try output.withRawBytes { (o) throws(E) -> R in try body(UnsafeRawBufferPointer(rebasing: o[0..<produced])) }
    }

    /// Convenience: the compressed bytes if worthwhile, else `nil`.
    public func compressed(_ input: some ContiguousBytes) -> Data? {
        input.withUnsafeBytes { raw in compress(raw) { $0.map { Data($0) } } }
    }
}

/// Raw-DEFLATE decompressor bounded by a declared length: the output must be exactly that many
/// bytes, so a small input can never expand into a huge allocation (zip bomb). Keeps one zlib
/// stream or libdeflate decompressor for its life; not thread-safe.
public final class Inflater {
    private let stream: UnsafeMutablePointer<z_stream>?
    private let fast: (lib: LibDeflate, decompressor: OpaquePointer)?
    public let engine: DeflateEngine

    public init(engine: DeflateEngine = .preferred) {
        if engine == .libdeflate, let lib = LibDeflate.shared, let d = lib.allocDecompressor() {
            fast = (lib, d)
            stream = nil
            self.engine = .libdeflate
            return
        }
        fast = nil
        self.engine = .zlib
        let stream = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
        stream.initialize(to: z_stream())
        let rc = inflateInit2_(stream, -15, zlibVersion(), Int32(MemoryLayout<z_stream>.size))
        precondition(rc == Z_OK, "inflateInit2 failed (\(rc)): out of memory")
        self.stream = stream
    }

    deinit {
        if let fast { fast.lib.freeDecompressor(fast.decompressor) }
        if let stream {
            inflateEnd(stream)
            stream.deinitialize(count: 1)
            stream.deallocate()
        }
    }

    /// Inflates `input` into exactly `expectedLength` bytes.
    /// - Throws: ``FormatError`` `.decompressionFailed` when the stream is invalid, ends early,
    ///   would produce more than `expectedLength` bytes, or has bytes after its end.
    public func decompress(_ input: UnsafeRawBufferPointer, expectedLength: Int) throws(FormatError) -> Data {
        guard expectedLength > 0, expectedLength <= Int(UInt32.max), input.count <= Int(UInt32.max),
              input.count > 0 else {
            throw FormatError(.decompressionFailed, "compressed payload has an impossible length")
        }
        var out = Data(count: expectedLength)
        let ok: Bool = out.withUnsafeMutableBytes { o in
            if let fast {
                // Exactly: success, every input byte consumed, the output filled.
                var consumed = 0, produced = 0
                let rc = fast.lib.decompressEx(fast.decompressor, input.baseAddress, input.count, o.baseAddress,
                                               expectedLength, &consumed, &produced)
                return rc == 0 && consumed == input.count && produced == expectedLength
            }
            let stream = stream!
            inflateReset(stream)
            stream.pointee.next_in = UnsafeMutablePointer(mutating: input.baseAddress!.assumingMemoryBound(to: Bytef.self))
            stream.pointee.avail_in = uInt(input.count)
            stream.pointee.next_out = o.baseAddress!.assumingMemoryBound(to: Bytef.self)
            stream.pointee.avail_out = uInt(expectedLength)
            defer {
                stream.pointee.next_in = nil
                stream.pointee.next_out = nil
            }
            let rc = inflate(stream, Z_FINISH)
            // Exactly: the stream ended, filled the output, and consumed every input byte.
            return rc == Z_STREAM_END && stream.pointee.avail_out == 0 && stream.pointee.avail_in == 0
        }
        guard ok else {
            throw FormatError(.decompressionFailed,
                              "compressed payload is invalid or does not inflate to its declared \(expectedLength) bytes")
        }
        return out
    }
}
