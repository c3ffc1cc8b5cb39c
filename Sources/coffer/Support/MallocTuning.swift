#if os(Linux) && canImport(Glibc)
import Glibc

// `mallopt` and its parameters live in <malloc.h>, which the Glibc module does not export.
@_silgen_name("mallopt")
private func glibcMallopt(_ parameter: Int32, _ value: Int32) -> Int32
/// `M_ARENA_MAX` in glibc's <malloc.h>.
private let mArenaMax: Int32 = -8
#endif

/// Process-wide allocator settings for the `coffer` executable (not the libraries: an embedding
/// app owns its allocator).
///
/// glibc gives threads that allocate concurrently their own malloc arenas (up to 8 per core) and
/// keeps freed memory in each; a backup's worker, upload and NIO threads churn multi-MiB pack
/// buffers, so freed buffers pile up in several arenas (60-80 MiB measured on the chat dataset).
/// Two arenas keep allocation contention low on the pipeline's few threads while bounding what is
/// kept. A user who set `MALLOC_ARENA_MAX` keeps their value.
enum MallocTuning {
    static func apply() {
        #if os(Linux) && canImport(Glibc)
        if getenv("MALLOC_ARENA_MAX") != nil { return }
        _ = glibcMallopt(mArenaMax, 2)
        #endif
    }
}
