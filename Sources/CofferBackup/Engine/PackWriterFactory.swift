import Foundation
import CofferCore
import Synchronization

/// Makes the backup's pack writers on one thread of its own (``IOExecutor/packBuffers``), so that
/// every pack buffer (8 MiB each, reserved when the writer is made) comes from that thread's glibc
/// malloc arena. Made on the workers' threads, each thread's arena kept its own free pack-sized
/// blocks (glibc keeps freed memory at the top of an arena, which is what makes reusing it cheap).
/// Measured on the chat dataset (2 workers): peak RSS of the initial backup about 162 -> 141 MiB,
/// same time. The caller suspends while one writer is made (an allocation, no copying).
/// The buffers now come from `BufferRecycler`, and this thread still matters for memory: making
/// writers on the workers instead (session 11) cut their waiting by 0.24-0.30 s per initial backup
/// of the chat dataset but raised peak RSS from 61.1 to 62.8 MiB on average (5 runs each
/// alternating), so it was reverted.
struct PackWriterFactory: Sendable {
    let keys: RepositoryKeys
    let parameters: RepositoryParameters

    /// A new, empty writer.
    func next() async -> sending PackWriter {
        // An async closure: it runs on the preferred executor (a synchronous one would run where
        // the caller is).
        await withTaskExecutorPreference(IOExecutor.packBuffers) { () async -> sending PackWriter in
            Self.make(keys: keys, parameters: parameters)
        }
    }

    /// Writers made elsewhere than on ``IOExecutor/packBuffers`` (debug builds count them; tests:
    /// must stay 0), and writers made.
    static let madeElsewhere = Atomic<Int>(0)
    static let made = Atomic<Int>(0)

    private static func make(keys: RepositoryKeys, parameters: RepositoryParameters) -> sending PackWriter {
        #if DEBUG
        made.add(1, ordering: .relaxed)
        if !IOExecutor.isPackBufferThread { madeElsewhere.add(1, ordering: .relaxed) }
        #endif
        return PackWriter(keys: keys, compressionLevel: parameters.compressionLevel, expectedSize: parameters.targetPackSize,
                   padding: PaddingPolicy(parameters: parameters))
    }
}
