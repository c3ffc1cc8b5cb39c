import Foundation
import CofferCore
import Synchronization

/// Makes the backup's pack writers. Each writer's buffer (the target pack size plus room for the
/// header and padding, page-aligned) comes from `BufferRecycler.shared`: the buffer of a pack whose
/// upload is done is the next pack's, so steady state allocates nothing.
///
/// History: writers used to be made on one thread of their own so that every buffer came from that
/// thread's glibc malloc arena (peak RSS 162 -> 141 MiB then); the recycler keeps buffers
/// explicitly, and the hop to that thread cost the workers 0.24-0.30 s of waiting per initial
/// backup of the chat dataset (about 0.5 ms per pack), so the writer is now made where it is needed.
struct PackWriterFactory: Sendable {
    let keys: RepositoryKeys
    let parameters: RepositoryParameters

    /// Writers made (tests: every pack of a backup comes from the factory).
    static let made = Atomic<Int>(0)

    /// A new, empty writer.
    func next() -> PackWriter {
        Self.made.add(1, ordering: .relaxed)
        return PackWriter(keys: keys, compressionLevel: parameters.compressionLevel, expectedSize: parameters.targetPackSize,
                          padding: PaddingPolicy(parameters: parameters))
    }
}
