#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CofferCore

/// One entry of a directory listing (a tree blob).
struct TreeNode: Sendable, Hashable {
    enum Kind: UInt8, Sendable {
        case file = 1
        case directory = 2
        case symlink = 3
        /// A named pipe (tree version 2): no content, recreated empty on restore.
        case fifo = 4
    }

    /// The file name's raw bytes (POSIX names need not be UTF-8); never empty, `.`, `..` or containing `/` or NUL.
    var name: [UInt8]
    var kind: Kind
    /// Captured through SQLite's online backup API (the stored content is that copy).
    var isDatabase = false
    /// Permission bits (`st_mode & 0o7777`).
    var mode: UInt32 = 0
    var uid: UInt32 = 0
    var gid: UInt32 = 0
    var mtimeSec: Int64 = 0
    var mtimeNsec: UInt32 = 0
    var ctimeSec: Int64 = 0
    var ctimeNsec: UInt32 = 0
    var inode: UInt64 = 0
    var device: UInt64 = 0
    /// Content length for files (of the captured copy for databases), 0 otherwise.
    var size: UInt64 = 0
    /// File content, in order.
    var content: [ChunkID] = []
    /// Directory listing.
    var subtree: ChunkID?
    /// Symlink target, raw bytes.
    var linkTarget: [UInt8] = []
    /// Hard link count of a file when it was read (`st_nlink`); 0 in version-1 trees. Restore links
    /// files with the same device and inode again only when this is above 1.
    var links: UInt32 = 0
    /// Directories: the number of non-directory entries (files, symlinks, fifos) in the whole subtree,
    /// so that a listing that cannot be read still counts what it held. `nil`: not recorded (a
    /// version-1 tree, or one rewritten from it).
    var entriesBelow: UInt64?

    var nameString: String { String(decoding: name, as: UTF8.self) }

    var modified: Date {
        Date(timeIntervalSince1970: Double(mtimeSec) + Double(mtimeNsec) / 1e9)
    }

    static func validName(_ name: [UInt8]) -> Bool {
        !name.isEmpty && name != [0x2e] && name != [0x2e, 0x2e] && !name.contains(0x2f) && !name.contains(0)
            && name.count <= Int(UInt16.max)
    }
}

/// A directory listing, stored as a blob of type tree; its id is the keyed HMAC of the encoding,
/// so identical directories deduplicate.
struct Tree: Sendable, Hashable {
    static let magic = "CFTR"
    /// Version written. Readers accept 1 (no fifo kind, no link count, no entry counts) and 2.
    static let version: UInt16 = 2
    /// The largest file size a tree may claim: sizes are converted to `Int64`/`Int`, and no file is
    /// larger than 2^62 bytes (4 EiB). A larger value is damage (or a hostile writer), named as such.
    static let maxFileSize: UInt64 = 1 << 62
    /// Written for `entriesBelow == nil` in a version-2 tree.
    static let unknownCount = UInt64.max

    /// Sorted by name bytes, unique.
    var nodes: [TreeNode]

    init(nodes: [TreeNode]) {
        self.nodes = nodes.sorted { $0.name.lexicographicallyPrecedes($1.name) }
    }

    func encoded() -> [UInt8] {
        var w = WireWriter(capacity: 16 + nodes.count * 120)
        w.raw(Array(Self.magic.utf8))
        w.u16(Self.version)
        w.u16(0)
        w.u32(UInt32(nodes.count))
        for n in nodes {
            w.lp16(n.name)
            w.u8(n.kind.rawValue)
            w.u8(n.isDatabase ? 1 : 0)
            w.u32(n.mode)
            w.u32(n.uid)
            w.u32(n.gid)
            w.i64(n.mtimeSec)
            w.u32(n.mtimeNsec)
            w.i64(n.ctimeSec)
            w.u32(n.ctimeNsec)
            w.u64(n.inode)
            w.u64(n.device)
            w.u64(n.size)
            w.u32(n.links)
            switch n.kind {
            case .file:
                w.u32(UInt32(n.content.count))
                for c in n.content { w.id(c) }
            case .directory:
                w.id(n.subtree!)
                w.u64(n.entriesBelow ?? Self.unknownCount)
            case .symlink:
                w.lp16(n.linkTarget)
            case .fifo:
                break
            }
        }
        return w.bytes
    }

    static func decode(_ bytes: [UInt8], what: String) throws(WireError) -> Tree {
        var r = WireReader(bytes, what: what)
        let v = try r.expectMagic(magic, versions: 1...version)
        let count = Int(try r.u32())
        guard count <= r.remaining / 60 else { throw r.fail("impossible entry count") }
        var nodes: [TreeNode] = []
        nodes.reserveCapacity(count)
        for _ in 0..<count {
            let name = try r.bytes16()
            guard TreeNode.validName(name) else { throw r.fail("invalid entry name") }
            guard let kind = TreeNode.Kind(rawValue: try r.u8()), v >= 2 || kind != .fifo else {
                throw r.fail("unknown entry kind")
            }
            let flags = try r.u8()
            guard flags & ~1 == 0 else { throw r.fail("unknown entry flags") }
            var n = TreeNode(name: name, kind: kind)
            n.isDatabase = flags & 1 != 0
            n.mode = try r.u32()
            n.uid = try r.u32()
            n.gid = try r.u32()
            n.mtimeSec = try r.i64()
            n.mtimeNsec = try r.u32()
            n.ctimeSec = try r.i64()
            n.ctimeNsec = try r.u32()
            n.inode = try r.u64()
            n.device = try r.u64()
            n.size = try r.u64()
            guard n.mode <= 0o7777, n.mtimeNsec < 1_000_000_000, n.ctimeNsec < 1_000_000_000 else {
                throw r.fail("field out of range")
            }
            guard n.size <= maxFileSize, kind == .file || n.size == 0 else {
                throw r.fail("entry \(String(decoding: name, as: UTF8.self)) claims an impossible size \(n.size)")
            }
            if v >= 2 { n.links = try r.u32() }
            switch kind {
            case .file:
                let c = Int(try r.u32())
                guard c <= r.remaining / 32 else { throw r.fail("impossible chunk count") }
                n.content.reserveCapacity(c)
                for _ in 0..<c { n.content.append(try r.chunkID()) }
            case .directory:
                n.subtree = try r.chunkID()
                if v >= 2 {
                    let below = try r.u64()
                    n.entriesBelow = below == unknownCount ? nil : below
                }
            case .symlink:
                n.linkTarget = try r.bytes16()
            case .fifo:
                break
            }
            if let last = nodes.last, !last.name.lexicographicallyPrecedes(n.name) {
                throw r.fail("entries not sorted or not unique")
            }
            nodes.append(n)
        }
        try r.expectEnd()
        var t = Tree(nodes: [])
        t.nodes = nodes
        return t
    }
}
