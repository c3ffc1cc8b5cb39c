import Foundation
import GRDB
import CofferPosix

/// Captures a live SQLite database consistently with the online backup API in one step
/// (`sqlite3_backup_step(-1)`, which holds one read transaction for the whole copy, so an app that
/// commits every few milliseconds cannot make it restart), into a private 0600 file in a 0700
/// temporary directory with `journal_mode=OFF`.
///
/// The copy holds plaintext: it is opened for reading and unlinked (with its directory) before
/// ``capture(path:)`` returns, so nothing is left on disk in any exit path that returns; the
/// caller reads the returned descriptor and closes it.
enum SQLiteCapture {
    static let tempPrefix = "coffer-capture"
    /// Page cache of each connection of a capture, in KiB.
    static let captureCacheKiB = 256

    /// Returns a read-only descriptor of the captured copy (already unlinked).
    /// - Parameter mode: ``DatabaseCapture/pageCopy`` copies every page as it is (freelist and
    ///   slack bytes included, so deleted rows may survive in them); ``DatabaseCapture/compacted``
    ///   writes a fresh database with `VACUUM INTO` (one read transaction too), which carries no
    ///   freelist page and no leftover bytes of deleted rows.
    ///   `directory`: where the private folder is made (the system's temporary directory by default).
    static func capture(path: String, mode: DatabaseCapture = .pageCopy, in directory: String? = nil) throws -> Int32 {
        let dir = try Posix.makePrivateTempDirectory(prefix: tempPrefix, in: directory)
        let copy = dir + "/capture.db"
        defer {
            unlink(copy)
            unlink(copy + "-journal")
            unlink(copy + "-wal")
            unlink(copy + "-shm")
            rmdir(dir)
        }
        // Create the file 0600 before SQLite opens it (SQLite would honour the umask instead).
        let created = open(copy, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard created >= 0 else { throw Errno(errno) }
        close(created)

        var sourceConfig = Configuration()
        sourceConfig.readonly = true
        sourceConfig.busyMode = .timeout(30)
        sourceConfig.label = "coffer capture source"
        // A small page cache on both sides (SQLite's default is 2 MiB each): the copy streams every
        // page once, so a bigger cache holds nothing worth keeping; measured on the chat dataset's
        // 135 MiB database, 256 KiB each captures as fast and takes 3.7 MiB less memory.
        sourceConfig.prepareDatabase { db in
            try db.execute(sql: "PRAGMA cache_size=-\(captureCacheKiB)")
        }
        var destConfig = Configuration()
        destConfig.label = "coffer capture copy"
        destConfig.prepareDatabase { db in
            try db.execute(sql: "PRAGMA journal_mode=OFF")
            try db.execute(sql: "PRAGMA synchronous=OFF")
            try db.execute(sql: "PRAGMA cache_size=-\(captureCacheKiB)")
        }
        do {
            let source = try DatabaseQueue(path: path, configuration: sourceConfig)
            switch mode {
            case .pageCopy:
                let dest = try DatabaseQueue(path: copy, configuration: destConfig)
                try source.backup(to: dest, pagesPerStep: -1)
                try dest.close()
            case .compacted:
                // VACUUM INTO builds the copy from the rows inside one read transaction of the
                // source (an app committing meanwhile does not make it restart); it accepts the
                // empty 0600 file created above and keeps the source's page size.
                try source.inDatabase { db in try db.execute(sql: "VACUUM INTO ?", arguments: [copy]) }
            }
            try source.close()
        }
        let fd = open(copy, O_RDONLY)
        guard fd >= 0 else { throw Errno(errno) }
        return fd
    }

    /// Removes capture directories left by a process that was killed mid-capture.
    static func removeStaleCaptures() {
        let base = NSTemporaryDirectory()
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: base) else { return }
        for n in names where n.hasPrefix(tempPrefix + "-") {
            let dir = (base.hasSuffix("/") ? base : base + "/") + n
            // Only directories older than a day: a capture in progress elsewhere is never touched.
            guard case .success(let st) = FileStat.lstat(dir), st.kind == .directory,
                  Double(st.mtimeSec) < Date().timeIntervalSince1970 - 86400 else { continue }
            try? FileManager.default.removeItem(atPath: dir)
        }
    }
}
