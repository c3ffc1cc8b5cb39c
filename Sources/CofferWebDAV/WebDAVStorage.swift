#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import AsyncHTTPClient
import CofferS3
import CofferStorage
import Logging
import NIOCore
import NIOHTTP1
import Synchronization

/// A repository on a WebDAV server (`webdav://HOST[:PORT]/PATH`, `webdavs://` for TLS), or on an
/// rclone remote served over loopback WebDAV (`rclone:REMOTE:PATH`, see ``RcloneServer``).
///
/// Each object is one file under the repository folder (`PATH/data/3f/3fa1...`). Writes upload
/// to a temporary name in the destination folder (`.NAME.RANDOM~tmp`, never an object name, so
/// listings skip it) and then `MOVE` it onto the final name: `Overwrite: T` for ``put(_:data:)``,
/// `Overwrite: F` for ``create(_:data:)`` (412 means the name is taken). Listings walk the folders
/// with `PROPFIND Depth: 1`; stat is a `PROPFIND Depth: 0` and reports the server's
/// `getlastmodified`. Whether racing creates have exactly one winner depends on the server's MOVE
/// being atomic: see docs/STORAGE.md for the servers tested. Call ``close()`` when done.
public final class WebDAVStorage: Storage {
    public let configuration: WebDAVConfiguration
    let client: WebDAVClient
    /// Folders known to exist (encoded paths), so each is made at most once per run.
    private let knownFolders = Mutex<Set<String>>([])
    /// Stopped by ``close()`` after the connections (an rclone process serving this storage).
    private let onClose: (@Sendable () async -> Void)?
    /// Called with the temporary's path (relative to the repository folder, `data/3f/.3fa1….1a2b~tmp`)
    /// after its upload and before its `MOVE` (tests: remove it there, as a server restart or a
    /// cleaner would).
    @_spi(Testing) public let beforeMove = Mutex<(@Sendable (String) async -> Void)?>(nil)

    public var location: String { configuration.location }

    public init(configuration: WebDAVConfiguration, logger: Logger = Logger(label: "coffer.webdav"),
                onClose: (@Sendable () async -> Void)? = nil) {
        self.configuration = configuration
        self.client = WebDAVClient(configuration: configuration, logger: logger)
        self.onClose = onClose
    }

    /// Opens `webdav://HOST[:PORT]/PATH` or `webdavs://...` with credentials from `environment`
    /// (see ``WebDAVConfiguration/resolve(url:environment:)``).
    public static func open(url: String, environment: [String: String], options: WebDAVOptions = WebDAVOptions(),
                            logger: Logger = Logger(label: "coffer.webdav")) throws(StorageError) -> WebDAVStorage {
        var config = try WebDAVConfiguration.resolve(url: url, environment: environment)
        config.options = options
        return WebDAVStorage(configuration: config, logger: logger)
    }

    public func close() async {
        await client.shutdown()
        await onClose?()
    }

    // MARK: Storage

    /// Every request is retried here (backoff with jitter, within the network budget), so callers
    /// add no retry layer of their own.
    public var retriesTransientFailures: Bool { true }

    public func put(_ name: String, data: Data) async throws(StorageError) {
        try check(name)
        try await write(name, data: data, overwrite: true)
    }

    public func create(_ name: String, data: Data) async throws(StorageError) {
        try check(name)
        try await write(name, data: data, overwrite: false)
    }

    /// How many times a write uploads its temporary when it keeps vanishing before its `MOVE`.
    static let uploadAttempts = 3

    /// Upload to a temporary, then `MOVE` it onto `name`. A temporary that is gone when its `MOVE`
    /// arrives (a server restarted with a cleaned upload folder, a cleaner removing `*~tmp`, a
    /// retried `MOVE` whose first answer was lost) is uploaded again, at most
    /// ``uploadAttempts`` times in all, unless the object already holds these bytes.
    private func write(_ name: String, data: Data, overwrite: Bool) async throws(StorageError) {
        for _ in 0..<Self.uploadAttempts {
            let temporary = try await uploadTemporary(name, data: data)
            if let hook = beforeMove.withLock({ $0 }) { await hook(temporary.joined(separator: "/")) }
            switch try await move(temporary, to: name, overwrite: overwrite) {
            case .moved:
                return
            case .taken:
                await deleteQuietly(temporary)
                // A retry after a lost answer finds its own write: identical bytes count as success.
                let existing: Data
                do { existing = try await get(name) } catch where error.code == .notFound {
                    throw StorageError(.transient, name: name, message: "object \(name) was reported taken and then missing on \(location); try again")
                }
                if existing == data { return }
                throw StorageError(.alreadyExists, name: name, message: "object \(name) already exists")
            case .sourceMissing:
                // Apache's mod_dav_fs can answer 404 to a MOVE racing another onto the same name
                // while the temporary is still there: remove it (nothing if it is really gone).
                await deleteQuietly(temporary)
                // Our own earlier MOVE may have landed (its answer lost): then the object holds our bytes.
                let existing: Data?
                do { existing = try await get(name) } catch where error.code == .notFound { existing = nil }
                if existing == data { return }
                if existing != nil && !overwrite {
                    throw StorageError(.alreadyExists, name: name, message: "object \(name) already exists")
                }
                continue  // upload it again
            }
        }
        throw StorageError(.transient, name: name, message: "the temporary upload of \(name) vanished \(Self.uploadAttempts) times before it could be moved into place on \(location) (is something cleaning the server's folder?)")
    }

    public func get(_ name: String, range: Range<Int>?) async throws(StorageError) -> Data {
        try check(name)
        let path = client.path(segments(name))
        guard let range else {
            let r = try await client.send(.GET, path: path, name: name, maxBody: Int.max)
            return Data(r.body.readableBytesView)
        }
        guard range.lowerBound >= 0 else { throw StorageError.rangeNotSatisfiable(name: name, size: 0) }
        if range.isEmpty {
            // HTTP cannot ask for zero bytes; check the bound against the size instead.
            guard let info = try await stat(name) else { throw StorageError.notFound(name) }
            guard range.lowerBound <= info.size else { throw StorageError.rangeNotSatisfiable(name: name, size: info.size) }
            return Data()
        }
        let r: HTTPResponseCollected
        do {
            r = try await client.send(.GET, path: path, headers: [("range", "bytes=\(range.lowerBound)-\(range.upperBound - 1)")],
                                      name: name, maxBody: max(range.count, 1 << 20))
        } catch where error.code == .rangeNotSatisfiable {
            let size = (try? await stat(name))??.size ?? 0
            throw StorageError.rangeNotSatisfiable(name: name, size: size)
        }
        if r.status == .ok {
            // The server ignored Range and sent the whole object.
            let whole = Data(r.body.readableBytesView)
            guard range.upperBound <= whole.count else { throw StorageError.rangeNotSatisfiable(name: name, size: whole.count) }
            return whole[range.lowerBound..<range.upperBound]
        }
        // A server that clamps a range past the end answers 206 with fewer bytes: never pass that on.
        guard r.status == .partialContent, r.body.readableBytes == range.count,
              Self.contentRangeStart(r.headers.first(name: "content-range")) == range.lowerBound else {
            let total = r.headers.first(name: "content-range").flatMap { $0.split(separator: "/").last }.flatMap { Int($0) }
            throw StorageError.rangeNotSatisfiable(name: name, size: total ?? r.body.readableBytes)
        }
        return Data(r.body.readableBytesView)
    }

    /// The first byte of `bytes a-b/n`, or `nil`.
    static func contentRangeStart(_ header: String?) -> Int? {
        guard let header, header.hasPrefix("bytes ") else { return nil }
        return header.dropFirst(6).split(separator: "-").first.flatMap { Int($0) }
    }

    public func stat(_ name: String) async throws(StorageError) -> ObjectInfo? {
        try check(name)
        let r = try await client.send(.PROPFIND, path: client.path(segments(name)),
                                      headers: [("depth", "0"), ("content-type", "application/xml; charset=utf-8")],
                                      body: ByteBuffer(string: MultiStatus.request), name: name,
                                      accept: { $0.code == 207 || $0 == .notFound })
        if r.status == .notFound { return nil }
        guard let resources = MultiStatus.parse(r.bodyBytes), let resource = resources.first else {
            throw StorageError(.transient, name: name, message: "the WebDAV server sent an unreadable PROPFIND answer for \(name) on \(location)")
        }
        if resource.isCollection { return nil }
        return ObjectInfo(name: name, size: resource.size ?? 0, modified: resource.modified ?? serverDate(r))
    }

    /// When a resource has no readable `getlastmodified`: the server's `Date` header (its clock),
    /// else now. Treating the object as just written is the safe side for prune's grace period.
    private func serverDate(_ r: HTTPResponseCollected) -> Date {
        r.headers.first(name: "date").flatMap(HTTPDate.parse) ?? Date()
    }

    public func list(prefix: String) async throws(StorageError) -> [ObjectInfo] {
        // Start in the deepest folder the prefix names whole (`data/0a/` -> data/0a, `data` -> the root).
        var start: [String] = []
        if let slash = prefix.lastIndex(of: "/") {
            let folder = String(prefix[..<slash])
            guard ObjectName.isValid(folder) else { return [] }
            start = folder.split(separator: "/").map(String.init)
        }
        var out: [ObjectInfo] = []
        var level: [[String]] = [start]
        let client = self.client
        let location = self.location
        let rootCount = configuration.rootSegments.count
        let root = configuration.rootSegments
        var isStart = true
        while !level.isEmpty {
            let folders = level
            let startLevel = isStart
            isStart = false
            let results: [Result<([ObjectInfo], [[String]]), StorageError>] = await withTaskGroup(of: Result<([ObjectInfo], [[String]]), StorageError>.self) { group in
                for folder in folders {
                    group.addTask {
                        do throws(StorageError) {
                            let r = try await client.send(.PROPFIND, path: client.path(folder, folder: true),
                                                          headers: [("depth", "1"), ("content-type", "application/xml; charset=utf-8")],
                                                          body: ByteBuffer(string: MultiStatus.request), name: nil,
                                                          accept: { $0.code == 207 || $0 == .notFound })
                            // A folder that is gone holds nothing (the start folder may never have been made).
                            if r.status == .notFound { return .success(([], [])) }
                            guard let resources = MultiStatus.parse(r.bodyBytes) else {
                                return .failure(StorageError(.transient, message: "the WebDAV server sent an unreadable listing of \(location)"))
                            }
                            let fallback = r.headers.first(name: "date").flatMap(HTTPDate.parse) ?? Date()
                            var files: [ObjectInfo] = []
                            var subfolders: [[String]] = []
                            for resource in resources {
                                guard resource.segments.count > rootCount, Array(resource.segments.prefix(rootCount)) == root else { continue }
                                let relative = Array(resource.segments.dropFirst(rootCount))
                                // The folder itself, and anything that is not inside it.
                                guard relative.count == folder.count + 1, Array(relative.prefix(folder.count)) == folder else { continue }
                                let name = relative.joined(separator: "/")
                                // Temporaries (`.x~tmp`) and foreign files are not object names.
                                guard ObjectName.isValid(name) else { continue }
                                if resource.isCollection {
                                    if (name + "/").hasPrefix(prefix) || prefix.hasPrefix(name + "/") { subfolders.append(relative) }
                                } else if name.hasPrefix(prefix) {
                                    files.append(ObjectInfo(name: name, size: resource.size ?? 0, modified: resource.modified ?? fallback))
                                }
                            }
                            return .success((files, subfolders))
                        } catch {
                            return .failure(error)
                        }
                    }
                }
                var collected: [Result<([ObjectInfo], [[String]]), StorageError>] = []
                for await result in group { collected.append(result) }
                return collected
            }
            level = []
            for result in results {
                switch result {
                case .success(let (files, subfolders)):
                    out += files
                    level += subfolders
                case .failure(let error):
                    if startLevel && error.code == .notFound { continue }
                    throw error
                }
            }
        }
        return out
    }

    public func delete(_ name: String) async throws(StorageError) {
        try check(name)
        _ = try await client.send(.DELETE, path: client.path(segments(name)), name: name,
                                  accept: { (200..<300).contains($0.code) || $0 == .notFound })
    }

    /// Deletes in parallel, bounded by the client's request limit.
    public func delete(_ names: [String]) async throws(StorageError) {
        for name in names { try check(name) }
        let limit = max(1, configuration.options.maxConcurrentRequests)
        let failure: StorageError? = await withTaskGroup(of: StorageError?.self) { group in
            var next = 0
            var first: StorageError?
            func add() {
                let name = names[next]
                next += 1
                group.addTask {
                    do throws(StorageError) { try await self.delete(name); return nil } catch { return error }
                }
            }
            while next < min(limit, names.count) { add() }
            while let result = await group.next() {
                if let result, first == nil { first = result }
                if first == nil && next < names.count { add() }
            }
            return first
        }
        if let failure { throw failure }
    }

    // MARK: Writing

    enum MoveOutcome { case moved, taken, sourceMissing }

    /// Uploads `data` to a fresh temporary name beside `name`, making missing folders on the way.
    private func uploadTemporary(_ name: String, data: Data) async throws(StorageError) -> [String] {
        var parts = segments(name)
        let base = parts.removeLast()
        var random = SystemRandomNumberGenerator()
        let temporary = parts + [".\(base).\(String(random.next() as UInt64, radix: 16))~tmp"]
        let path = client.path(temporary)
        let body = ByteBuffer(bytes: data)
        // 409 Conflict (RFC 4918 9.7.1) and some servers' 404: the folder is missing.
        let accept: (HTTPResponseStatus) -> Bool = { (200..<300).contains($0.code) || $0 == .conflict || $0 == .notFound }
        // Make a folder not yet seen in this run first: lighttpd answers an empty PUT into a missing
        // folder with 500 rather than 409, and rclone drops the connection.
        let folderPath = client.path(parts, folder: true)
        if !knownFolders.withLock({ $0.contains(folderPath) }) && !(configuration.rootSegments + parts).isEmpty {
            try await makeFolders(parts, name: name)
        }
        var r = try await client.send(.PUT, path: path, body: body, name: name, accept: accept)
        if r.status == .conflict || r.status == .notFound {
            try await makeFolders(parts, name: name)
            r = try await client.send(.PUT, path: path, body: body, name: name, accept: accept)
            if r.status == .conflict || r.status == .notFound {
                throw StorageError(.permanent, name: name, message: "the WebDAV server refused to store \(name) in \(location) (HTTP \(r.status.code)) although its folder was made")
            }
        }
        return temporary
    }

    /// `MOVE`s the temporary onto `name`.
    private func move(_ temporary: [String], to name: String, overwrite: Bool) async throws(StorageError) -> MoveOutcome {
        let destination = client.origin + client.path(segments(name))
        let r: HTTPResponseCollected
        do {
            r = try await client.send(.MOVE, path: client.path(temporary),
                                      headers: [("destination", destination), ("overwrite", overwrite ? "T" : "F")], name: name,
                                      accept: { (200..<300).contains($0.code) || $0 == .preconditionFailed || $0 == .notFound || $0 == .forbidden || $0 == .conflict })
        } catch {
            await deleteQuietly(temporary)
            throw error
        }
        switch r.status {
        case .preconditionFailed: return .taken
        case .notFound: return .sourceMissing
        case .forbidden, .conflict:
            // rclone answers 403 for a MOVE whose source is gone (a retry after a lost answer), and
            // some servers 409; a real permission problem or a missing destination folder leaves
            // the temporary in place.
            if try await exists(temporary) {
                await deleteQuietly(temporary)
                throw client.mapError(r, method: .MOVE, name: name)
            }
            return .sourceMissing
        default: return .moved
        }
    }

    private func exists(_ path: [String]) async throws(StorageError) -> Bool {
        let r = try await client.send(.PROPFIND, path: client.path(path), headers: [("depth", "0"), ("content-type", "application/xml; charset=utf-8")],
                                      body: ByteBuffer(string: MultiStatus.request), name: nil,
                                      accept: { $0.code == 207 || $0 == .notFound })
        return r.status != .notFound
    }

    private func deleteQuietly(_ temporary: [String]) async {
        _ = try? await client.send(.DELETE, path: client.path(temporary), name: nil,
                                   accept: { (200..<300).contains($0.code) || $0 == .notFound })
    }

    /// Makes `folder` (relative to the repository root) and any missing parent, the root included.
    private func makeFolders(_ folder: [String], name: String) async throws(StorageError) {
        let all = configuration.rootSegments + folder
        // Find the deepest folder that can be made, walking up on 409 (parent missing), then come back down.
        var depth = all.count
        var pending: [Int] = []
        while depth > 0 {
            let path = "/" + all.prefix(depth).map(WebDAVPath.encodeSegment).joined(separator: "/") + "/"
            if knownFolders.withLock({ $0.contains(path) }) { break }
            let r = try await client.send(.MKCOL, path: path, name: name,
                                          accept: { $0 == .created || $0 == .methodNotAllowed || $0 == .conflict || $0 == .forbidden || $0.code == 200 })
            if r.status == .forbidden {
                try await checkForbiddenFolder(r, path: path, name: name)
            }
            if r.status == .conflict {
                pending.append(depth)
                depth -= 1
                continue
            }
            knownFolders.withLock { _ = $0.insert(path) }
            break
        }
        if depth == 0 && !all.isEmpty {
            throw StorageError(.missingContainer, name: name, message: "the WebDAV server at \(location) has no folder to put the repository in: create its parent folder first")
        }
        for d in pending.reversed() {
            let path = "/" + all.prefix(d).map(WebDAVPath.encodeSegment).joined(separator: "/") + "/"
            let r = try await client.send(.MKCOL, path: path, name: name,
                                          accept: { $0 == .created || $0 == .methodNotAllowed || $0 == .forbidden || $0.code == 200 })
            if r.status == .forbidden { try await checkForbiddenFolder(r, path: path, name: name) }
            knownFolders.withLock { _ = $0.insert(path) }
        }
    }

    /// Some servers (an Apache `mod_dav_fs` setup, in issue 15's first attempt) answer `MKCOL` on an
    /// existing folder with 403 rather than 405: that folder exists. A 403 where no folder exists is
    /// a real refusal.
    private func checkForbiddenFolder(_ r: HTTPResponseCollected, path: String, name: String) async throws(StorageError) {
        let probe = try await client.send(.PROPFIND, path: path, headers: [("depth", "0"), ("content-type", "application/xml; charset=utf-8")],
                                          body: ByteBuffer(string: MultiStatus.request), name: nil,
                                          accept: { $0.code == 207 || $0 == .notFound })
        if probe.status.code == 207, let resource = MultiStatus.parse(probe.bodyBytes)?.first, resource.isCollection { return }
        throw client.mapError(r, method: .MKCOL, name: name)
    }

    private func segments(_ name: String) -> [String] {
        name.split(separator: "/").map(String.init)
    }

    private func check(_ name: String) throws(StorageError) {
        guard ObjectName.isValid(name) else { throw StorageError.invalidName(name) }
    }
}
