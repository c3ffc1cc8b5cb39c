import ArgumentParser
import CofferBackup
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `coffer dump SNAPSHOT PATH`
struct DumpCommand: AsyncParsableCommand {
    enum Archive: String, ExpressibleByArgument, CaseIterable {
        case tar
    }

    static let configuration = CommandConfiguration(
        commandName: "dump",
        abstract: "Write one file of a snapshot to stdout, or a folder as a tar stream.",
        discussion: """
            PATH is a path inside the snapshot as `ls` shows it, or an absolute path as it was on the \
            machine backed up; `/` is the whole snapshot. A file is written as it is; a folder (or \
            anything with --archive tar) as a POSIX tar stream (ustar headers, pax records for long \
            names, link targets and large sizes), with the folder's name as the first component. Every \
            blob is verified before it is written.
            """)

    @OptionGroup var global: GlobalOptions

    @Argument(help: ArgumentHelp("The snapshot: latest, an id, or an id prefix.", valueName: "snapshot"))
    var snapshot: String

    @Argument(help: ArgumentHelp("The file or folder to write.", valueName: "path"))
    var path: String

    @Option(name: .long, help: ArgumentHelp("Write a tar stream even for a single file (tar is the only format).", valueName: "format"))
    var archive: Archive?

    func run() async throws {
        let access = RepositoryAccess(global)
        try await ErrorReport.run(logger: access.logger) {
            try await access.withRepository { repo in
                let snap = try await repo.snapshot(matching: snapshot)
                let whole = path.split(separator: "/").filter { $0 != "." }.isEmpty
                let entries = try await repo.entries(snapshot: snap.id, path: whole ? nil : path)
                let out = StdoutWriter()
                if archive == nil, entries.count == 1, entries[0].info.kind == .file, !whole {
                    try await repo.readContent(entries[0]) { try out.write($0) }
                    return
                }
                var tar = TarWriter(out: out)
                for e in entries {
                    try tar.header(for: e)
                    if e.info.kind == .file {
                        var written: Int64 = 0
                        try await repo.readContent(e) { data in
                            try out.write(data)
                            written += Int64(data.count)
                        }
                        guard written == e.info.size else {
                            throw CLIError(.damaged, "\(e.info.path) holds \(written) bytes but its tree says \(e.info.size)",
                                           hint: "Run `coffer check` to see what is damaged.")
                        }
                        try tar.pad(e.info.size)
                    }
                }
                try tar.finish()
            }
            return .ok
        }
    }
}

/// Unbuffered writes to stdout; a closed pipe or a full disk is an error (never a silently short dump).
struct StdoutWriter {
    func write(_ data: Data) throws {
        try data.withUnsafeBytes { raw in
            guard var p = raw.baseAddress else { return }
            var left = raw.count
            while left > 0 {
                #if canImport(Darwin)
                let n = Darwin.write(STDOUT_FILENO, p, left)
                #else
                let n = Glibc.write(STDOUT_FILENO, p, left)
                #endif
                if n < 0 {
                    if errno == EINTR { continue }
                    throw CLIError(.failure, "cannot write to stdout: \(String(cString: strerror(errno)))")
                }
                p += n
                left -= n
            }
        }
    }
}

/// A POSIX (pax/ustar) tar stream.
struct TarWriter {
    let out: StdoutWriter
    static let block = 512

    /// Writes the header(s) of one entry; for a file, its content must follow, then ``pad(_:)``.
    mutating func header(for e: SnapshotEntry) throws {
        let info = e.info
        var name = info.path
        let type: UInt8
        switch info.kind {
        case .file: type = UInt8(ascii: "0")
        case .directory: type = UInt8(ascii: "5"); name += "/"
        case .symlink: type = UInt8(ascii: "2")
        case .fifo: type = UInt8(ascii: "6")
        }
        let size = info.kind == .file ? info.size : 0
        let link = info.linkTarget ?? ""
        var pax: [(String, String)] = []
        let (prefix, short) = Self.split(name)
        if prefix == nil && Array(name.utf8).count > 100 { pax.append(("path", name)) }
        if Array(link.utf8).count > 100 { pax.append(("linkpath", link)) }
        if size > 0o77777777777 { pax.append(("size", "\(size)")) }
        let mtime = Int64(info.modified.timeIntervalSince1970.rounded(.down))
        if mtime < 0 || mtime > 0o77777777777 { pax.append(("mtime", "\(mtime)")) }
        if !pax.isEmpty {
            var body = [UInt8]()
            for (k, v) in pax { body += Self.paxRecord(k, v) }
            let paxName = "PaxHeaders/" + String(decoding: Array(name.utf8).suffix(80), as: UTF8.self)
            try out.write(Data(Self.ustar(name: Array(paxName.utf8.prefix(100)), prefix: [], mode: 0o644, uid: 0, gid: 0,
                                          size: Int64(body.count), mtime: 0, type: UInt8(ascii: "x"), link: [])))
            try out.write(Data(body))
            try pad(Int64(body.count))
        }
        let longName = pax.contains { $0.0 == "path" }
        // With a pax path the ustar name is only a fallback for old readers.
        let headerName = longName ? Array(Array(name.utf8).suffix(100)) : Array((prefix == nil ? name : short).utf8)
        let headerPrefix = longName ? [] : Array((prefix ?? "").utf8)
        try out.write(Data(Self.ustar(name: headerName, prefix: headerPrefix,
                                      mode: info.mode, uid: e.uid, gid: e.gid,
                                      size: min(size, 0o77777777777), mtime: max(0, min(mtime, 0o77777777777)),
                                      type: type, link: Array(link.utf8.prefix(100)))))
    }

    /// Zero bytes up to the next block after `size` bytes of content.
    func pad(_ size: Int64) throws {
        let r = Int(size % Int64(Self.block))
        if r != 0 { try out.write(Data(count: Self.block - r)) }
    }

    /// The end-of-archive marker: two zero blocks.
    func finish() throws {
        try out.write(Data(count: 2 * Self.block))
    }

    /// Splits a path that fits ustar's name (100) and prefix (155) fields at a `/`: (prefix, name);
    /// `(nil, path)` when it fits the name alone or cannot be split.
    static func split(_ path: String) -> (String?, String) {
        let bytes = Array(path.utf8)
        if bytes.count <= 100 { return (nil, path) }
        // A trailing slash (directories) belongs to the name part.
        let searchEnd = bytes.last == UInt8(ascii: "/") ? bytes.count - 1 : bytes.count
        for i in stride(from: min(searchEnd - 1, 155), through: 1, by: -1) where bytes[i] == UInt8(ascii: "/") {
            if bytes.count - i - 1 <= 100, bytes.count - i - 1 > 0 {
                return (String(decoding: bytes[..<i], as: UTF8.self), String(decoding: bytes[(i + 1)...], as: UTF8.self))
            }
        }
        return (nil, path)
    }

    /// "LEN key=value\n", where LEN counts the whole record including its own digits.
    static func paxRecord(_ key: String, _ value: String) -> [UInt8] {
        let rest = " \(key)=\(value)\n".utf8.count
        var len = rest + 1
        while "\(len)".count + rest != len { len += 1 }
        return Array("\(len) \(key)=\(value)\n".utf8)
    }

    static func ustar(name: [UInt8], prefix: [UInt8], mode: UInt32, uid: UInt32, gid: UInt32, size: Int64,
                      mtime: Int64, type: UInt8, link: [UInt8]) -> [UInt8] {
        var h = [UInt8](repeating: 0, count: block)
        func put(_ bytes: [UInt8], _ at: Int, _ width: Int) {
            for (i, b) in bytes.prefix(width).enumerated() { h[at + i] = b }
        }
        func octal(_ v: Int64, _ at: Int, _ width: Int) {
            let s = String(v, radix: 8)
            put(Array((String(repeating: "0", count: max(0, width - 1 - s.count)) + s).utf8), at, width - 1)
        }
        put(name, 0, 100)
        octal(Int64(mode & 0o7777), 100, 8)
        octal(Int64(uid & 0o7777777), 108, 8)
        octal(Int64(gid & 0o7777777), 116, 8)
        octal(size, 124, 12)
        octal(mtime, 136, 12)
        put(Array(repeating: UInt8(ascii: " "), count: 8), 148, 8)
        h[156] = type
        put(link, 157, 100)
        put(Array("ustar".utf8) + [0], 257, 6)
        put(Array("00".utf8), 263, 2)
        put(prefix, 345, 155)
        let sum = h.reduce(0) { $0 + Int($1) }
        let s = String(sum, radix: 8)
        put(Array((String(repeating: "0", count: max(0, 6 - s.count)) + s).utf8) + [0, UInt8(ascii: " ")], 148, 8)
        return h
    }
}
