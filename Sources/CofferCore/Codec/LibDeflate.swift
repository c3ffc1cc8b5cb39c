#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Darwin)
import Darwin
#elseif canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Which implementation of raw DEFLATE (RFC 1951) compresses and inflates payloads. Both write and
/// read the same format; a repository written with one is read by the other (only the compressed
/// bytes differ, and nothing in the format depends on them: blob ids are MACs of the plaintext).
public enum DeflateEngine: String, Sendable, CaseIterable {
    /// zlib, linked at build time: present on every platform Coffer builds for.
    case zlib
    /// libdeflate (whole-buffer DEFLATE), loaded at run time when the system has it
    /// (`libdeflate.so.0`, Debian's `libdeflate0`; `libdeflate.0.dylib` on macOS with Homebrew).
    /// About 3x faster than zlib at level 1 on 4 KiB database pages, with a slightly better ratio.
    case libdeflate

    /// The engine new compressors and decompressors use: libdeflate when the system has it, else
    /// zlib. `COFFER_DEFLATE=zlib` (or `libdeflate`) in the environment chooses one explicitly, for
    /// comparing the two; asking for libdeflate where it is missing falls back to zlib.
    public static let preferred: DeflateEngine = {
        let asked = ProcessInfo.processInfo.environment["COFFER_DEFLATE"].flatMap(DeflateEngine.init(rawValue:))
        if asked == .zlib { return .zlib }
        return LibDeflate.shared != nil ? .libdeflate : .zlib
    }()

    /// Whether this engine can be used in this process.
    public var isAvailable: Bool { self == .zlib || LibDeflate.shared != nil }
}

/// libdeflate's C entry points, looked up with `dlopen`/`dlsym` so that Coffer builds and runs
/// without the library (and without its headers) and uses it where it is installed. The signatures
/// are those of libdeflate's public header `libdeflate.h` (stable since its version 1.0).
struct LibDeflate: @unchecked Sendable {
    typealias AllocCompressor = @convention(c) (Int32) -> OpaquePointer?
    typealias Compress = @convention(c) (OpaquePointer?, UnsafeRawPointer?, Int, UnsafeMutableRawPointer?, Int) -> Int
    typealias FreeCompressor = @convention(c) (OpaquePointer?) -> Void
    typealias AllocDecompressor = @convention(c) () -> OpaquePointer?
    /// `libdeflate_deflate_decompress_ex(d, in, in_nbytes, out, out_nbytes_avail, &actual_in, &actual_out)`;
    /// returns 0 (LIBDEFLATE_SUCCESS), 1 (BAD_DATA), 2 (SHORT_OUTPUT) or 3 (INSUFFICIENT_SPACE).
    typealias DecompressEx = @convention(c) (OpaquePointer?, UnsafeRawPointer?, Int, UnsafeMutableRawPointer?, Int,
                                             UnsafeMutablePointer<Int>?, UnsafeMutablePointer<Int>?) -> Int32
    typealias FreeDecompressor = @convention(c) (OpaquePointer?) -> Void

    let allocCompressor: AllocCompressor
    let compress: Compress
    let freeCompressor: FreeCompressor
    let allocDecompressor: AllocDecompressor
    let decompressEx: DecompressEx
    let freeDecompressor: FreeDecompressor

    /// The loaded library, or nil when the system has none (or one without these symbols).
    static let shared: LibDeflate? = load()

    private static func load() -> LibDeflate? {
        #if os(Linux) || os(macOS)
        #if os(Linux)
        let names = ["libdeflate.so.0", "libdeflate.so"]
        #else
        let names = ["libdeflate.0.dylib", "/opt/homebrew/lib/libdeflate.0.dylib", "/usr/local/lib/libdeflate.0.dylib"]
        #endif
        guard let handle = names.lazy.compactMap({ dlopen($0, RTLD_NOW | RTLD_LOCAL) }).first else { return nil }
        func symbol<T>(_ name: String, _ type: T.Type) -> T? {
            guard let p = dlsym(handle, name) else { return nil }
            return unsafeBitCast(p, to: type)
        }
        guard let ac = symbol("libdeflate_alloc_compressor", AllocCompressor.self),
              let c = symbol("libdeflate_deflate_compress", Compress.self),
              let fc = symbol("libdeflate_free_compressor", FreeCompressor.self),
              let ad = symbol("libdeflate_alloc_decompressor", AllocDecompressor.self),
              let d = symbol("libdeflate_deflate_decompress_ex", DecompressEx.self),
              let fd = symbol("libdeflate_free_decompressor", FreeDecompressor.self)
        else { dlclose(handle); return nil }
        return LibDeflate(allocCompressor: ac, compress: c, freeCompressor: fc,
                          allocDecompressor: ad, decompressEx: d, freeDecompressor: fd)
        #else
        return nil   // iOS and other platforms: apps cannot load libraries that are not in their bundle
        #endif
    }
}
