#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Where a repository's encrypted objects live: a local or synced folder, or an S3 bucket.
///
/// Semantics every backend guarantees (the conformance suite in `CofferStorageTests` checks them):
/// - Object names are relative paths of `[a-z0-9._-]` segments joined by `/` (for example
///   `data/3f/3fa1...`, `config`). A backend rejects any other name with ``StorageError/invalidName(_:)``.
/// - ``put(_:data:)`` is atomic and whole: a reader sees either no object or all of `data`, never a
///   prefix, even if the writer crashes. After `put` returns, `get`, `stat` and `list` see the object
///   (read-after-write). Writing a name that exists replaces it atomically (the engine never does
///   this for content-addressed objects, but a retried upload of identical bytes must succeed).
/// - ``get(_:range:)`` returns exactly the requested bytes or throws: a range that does not lie
///   wholly inside the object (`range.upperBound > size`, or a negative bound) throws
///   ``StorageError/rangeNotSatisfiable(name:size:)``, never a shorter result. An empty range inside
///   the object (`lowerBound <= size`) returns empty `Data`.
/// - ``create(_:data:)`` is ``put(_:data:)`` that fails with `.alreadyExists` instead of replacing
///   (S3 `If-None-Match: *`, a hard link locally): two writers racing for a name with different
///   bytes cannot both win. It succeeds when the name already holds exactly `data`, so a retried
///   create whose first answer was lost does not fail.
/// - ``list(prefix:)`` returns every object whose name starts with `prefix`, in no promised order,
///   never temporary files of in-flight writes.
/// - ``delete(_:)`` of a missing object succeeds (idempotent).
/// - Errors are ``StorageError``; ``StorageError/isTransient`` tells whether retrying may help.
public protocol Storage: Sendable {
    /// A short human-readable location for messages, without credentials (`/path/to/repo`, `s3://bucket/prefix`).
    var location: String { get }

    /// Stores `data` under `name`, atomically and durably.
    func put(_ name: String, data: Data) async throws(StorageError)

    /// Reads the whole object, or `range` of it.
    func get(_ name: String, range: Range<Int>?) async throws(StorageError) -> Data

    /// Size and modification time of one object, or `nil` when it does not exist.
    func stat(_ name: String) async throws(StorageError) -> ObjectInfo?

    /// Every object whose name starts with `prefix` (`""` lists all).
    func list(prefix: String) async throws(StorageError) -> [ObjectInfo]

    /// Removes the object; succeeds when it does not exist.
    func delete(_ name: String) async throws(StorageError)

    /// Removes several objects (idempotent like ``delete(_:)``). A requirement so that backends
    /// that batch (S3 DeleteObjects) are used through `any Storage`; the default deletes one by one.
    func delete(_ names: [String]) async throws(StorageError)

    /// Stores `data` under `name` only if no object has that name, atomically and durably.
    /// - Throws: ``StorageError`` with code `.alreadyExists` when the name is taken.
    func create(_ name: String, data: Data) async throws(StorageError)

    /// ``create(_:data:)`` for an object whose SHA-256 the caller has already computed (the engine
    /// names packs and sealed objects by it). A backend that sends the payload's hash anyway (S3's
    /// SigV4 `x-amz-content-sha256`) uses `sha256` instead of hashing the bytes a second time; the
    /// server then checks it, so a wrong digest fails the write rather than storing wrong bytes.
    func create(_ name: String, data: Data, sha256: [UInt8]) async throws(StorageError)

    /// Releases connections and other resources. Call once, when done; the storage is unusable after.
    func close() async

    /// `true` when the backend retries transient failures itself (S3 and WebDAV do, with backoff,
    /// within `COFFER_NETWORK_BUDGET`, and say so on stderr). The engine then makes one call and
    /// adds no retry layer of its own: stacked layers multiply (8 attempts × 4 = 32) and outlast the
    /// budget the user set. `false` (the default, and the folder backend's answer) lets the engine
    /// retry a transient failure a few times with a short backoff.
    var retriesTransientFailures: Bool { get }
}

extension Storage {
    /// No retry layer of its own (see the requirement).
    public var retriesTransientFailures: Bool { false }

    /// Reads the whole object.
    public func get(_ name: String) async throws(StorageError) -> Data {
        try await get(name, range: nil)
    }

    /// Nothing to release by default.
    public func close() async {}

    /// Backends without a use for a known digest ignore it.
    public func create(_ name: String, data: Data, sha256: [UInt8]) async throws(StorageError) {
        try await create(name, data: data)
    }

    /// Removes several objects. Backends that can batch deletions override this.
    public func delete(_ names: [String]) async throws(StorageError) {
        for name in names { try await delete(name) }
    }
}

/// One stored object as a listing sees it.
public struct ObjectInfo: Sendable, Hashable {
    public var name: String
    public var size: Int
    /// The storage's own timestamp (never the device clock): prune's grace period is measured with it.
    public var modified: Date

    public init(name: String, size: Int, modified: Date) {
        self.name = name
        self.size = size
        self.modified = modified
    }
}

/// A storage failure, with enough context to act on and nothing secret in it.
public struct StorageError: Error, Sendable, CustomStringConvertible {
    /// What kind of failure this is: compare with `==` or switch with a `default:` (codes can be
    /// added in later versions without breaking callers; match on the code, never on the message).
    public struct Code: Sendable, Hashable, CaseIterable, CustomStringConvertible {
        private enum Base: String, Sendable, Hashable, CaseIterable {
            case notFound, invalidName, rangeNotSatisfiable, accessDenied, missingContainer, clockSkew,
                 noSpace, alreadyExists, connectionRefused, transient, permanent
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The object does not exist.
        public static let notFound = Code(.notFound)
        /// The name is not a valid object name.
        public static let invalidName = Code(.invalidName)
        /// The requested byte range lies outside the object.
        public static let rangeNotSatisfiable = Code(.rangeNotSatisfiable)
        /// Credentials missing, wrong, or not allowed to do this.
        public static let accessDenied = Code(.accessDenied)
        /// The folder or bucket does not exist.
        public static let missingContainer = Code(.missingContainer)
        /// The device's clock is too far from the server's for signed requests.
        public static let clockSkew = Code(.clockSkew)
        /// No space left on the device or quota exceeded.
        public static let noSpace = Code(.noSpace)
        /// ``Storage/create(_:data:)`` found the name taken.
        public static let alreadyExists = Code(.alreadyExists)
        /// Nothing listens at the endpoint (the connection was refused). Transient: the server may come
        /// up, so backends retry it like ``transient``; a message can then say to check the address.
        public static let connectionRefused = Code(.connectionRefused)
        /// A failure that retrying may fix (timeouts, resets, 5xx, throttling).
        public static let transient = Code(.transient)
        /// Any other failure that retrying will not fix.
        public static let permanent = Code(.permanent)

        public static var allCases: [Code] { Base.allCases.map(Code.init) }
        /// The code's name (`accessDenied`), for logs and JSON.
        public var description: String { base.rawValue }
    }

    public var code: Code
    /// The object concerned, if any.
    public var name: String?
    /// What happened, in words a user can act on.
    public var message: String
    /// The underlying error, for logs.
    public var underlying: (any Error & Sendable)?

    public init(_ code: Code, name: String? = nil, message: String, underlying: (any Error & Sendable)? = nil) {
        self.code = code
        self.name = name
        self.message = message
        self.underlying = underlying
    }

    /// Retrying may help: ``Code/transient`` and ``Code/connectionRefused``.
    public var isTransient: Bool { code == .transient || code == .connectionRefused }

    public static func notFound(_ name: String) -> StorageError {
        StorageError(.notFound, name: name, message: "object \(name) does not exist")
    }

    public static func invalidName(_ name: String) -> StorageError {
        StorageError(.invalidName, name: name, message: "\"\(name)\" is not a valid object name")
    }

    public static func rangeNotSatisfiable(name: String, size: Int) -> StorageError {
        StorageError(.rangeNotSatisfiable, name: name, message: "requested range lies outside object \(name) (\(size) bytes)")
    }

    public var description: String { message }
}

/// Checks the object-name rule shared by every backend.
public enum ObjectName {
    public static func isValid(_ name: String) -> Bool {
        guard !name.isEmpty, name.utf8.count <= 512 else { return false }
        for segment in name.split(separator: "/", omittingEmptySubsequences: false) {
            guard !segment.isEmpty, segment != ".", segment != ".." else { return false }
            for byte in segment.utf8 {
                switch byte {
                case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                     UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"):
                    continue
                default:
                    return false
                }
            }
        }
        return true
    }
}
