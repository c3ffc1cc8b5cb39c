#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Opens a repository's storage from what a user types.
public enum StorageLocation {
    /// Opens a local folder given as a plain path or a `file://` URL.
    ///
    /// S3 (`s3://...`) lives in CofferS3: use `S3Storage.open(url:environment:)`, or
    /// `StorageLocation.open(_:environment:)` from CofferS3, which accepts both kinds.
    /// - Parameters:
    ///   - urlOrPath: `/path/to/repo`, `relative/path`, `~/repo` or `file:///path/to/repo`.
    ///   - create: create the folder when missing (for `init`).
    /// - Throws: ``StorageError`` `.invalidName` for an unsupported scheme, otherwise what
    ///   ``LocalStorage/init(root:create:)`` throws.
    public static func open(_ urlOrPath: String, create: Bool = false) throws(StorageError) -> LocalStorage {
        try LocalStorage(root: localPath(urlOrPath), create: create)
    }

    /// The folder path a plain path or `file://` URL names.
    public static func localPath(_ urlOrPath: String) throws(StorageError) -> String {
        if urlOrPath.hasPrefix("file://") {
            var rest = String(urlOrPath.dropFirst(7))
            // file://localhost/path and file:///path both name /path.
            if rest.hasPrefix("localhost/") { rest = String(rest.dropFirst(9)) }
            guard rest.hasPrefix("/") else {
                throw StorageError(.invalidName, message: "\"\(urlOrPath)\" is not a local file URL: expected file:///absolute/path")
            }
            return percentDecode(rest)
        }
        if let colon = urlOrPath.firstIndex(of: ":"), urlOrPath[..<colon].allSatisfy({ $0.isLetter || $0.isNumber || $0 == "+" }),
           urlOrPath[colon...].hasPrefix("://") {
            let scheme = urlOrPath[..<colon]
            throw StorageError(.invalidName, message: "unsupported repository URL scheme \"\(scheme)\": use a folder path, file:///path or s3://bucket/prefix")
        }
        if urlOrPath == "~" || urlOrPath.hasPrefix("~/"), let home = environmentHome() {
            return home + urlOrPath.dropFirst()
        }
        return urlOrPath
    }

    private static func environmentHome() -> String? {
        ProcessInfo.processInfo.environment["HOME"]
    }

    private static func percentDecode(_ s: String) -> String {
        var bytes: [UInt8] = []
        var it = Array(s.utf8)[...]
        while let b = it.popFirst() {
            if b == UInt8(ascii: "%"), it.count >= 2,
               let v = UInt8(String(decoding: it.prefix(2), as: UTF8.self), radix: 16) {
                bytes.append(v)
                it = it.dropFirst(2)
            } else {
                bytes.append(b)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
