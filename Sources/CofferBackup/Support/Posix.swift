import CofferPosix
import CofferCore
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension FileStat {
    func apply(to node: inout TreeNode) {
        node.mode = mode
        node.uid = uid
        node.gid = gid
        node.mtimeSec = mtimeSec
        node.mtimeNsec = mtimeNsec
        node.ctimeSec = ctimeSec
        node.ctimeNsec = ctimeNsec
        node.inode = inode
        node.device = device
    }
}

/// Gives memory the allocator keeps after `free` back to the system, where the C library can
/// (glibc's `malloc_trim`, looked up at run time; nothing elsewhere: Darwin's allocator returns
/// freed pages by itself). Called between a backup's phases: the data phase's buffers, freed in
/// the middle of glibc's heaps, otherwise stay resident through the trees and the snapshot.
enum FreedMemory {
    static func release() {
        BufferRecycler.shared.drain()
        #if canImport(Glibc)
        _ = mallocTrim?(0)
        #endif
    }

    #if canImport(Glibc)
    private typealias MallocTrim = @convention(c) (Int) -> Int32
    private static let mallocTrim: MallocTrim? = {
        guard let symbol = dlsym(nil, "malloc_trim") else { return nil }
        return unsafeBitCast(symbol, to: MallocTrim.self)
    }()
    #endif
}
