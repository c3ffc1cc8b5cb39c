#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CofferCore

/// A failure of a repository operation, with enough context to act on (which object, which file)
/// and nothing secret in it. The CLI maps ``Code`` to its exit codes in one place.
public struct BackupError: Error, Sendable, CustomStringConvertible {
    /// What kind of failure this is: compare with `==` or switch with a `default:` (codes can be
    /// added in later versions without breaking callers; match on the code, never on the message).
    public struct Code: Sendable, Hashable, CaseIterable, CustomStringConvertible {
        private enum Base: String, Sendable, Hashable, CaseIterable {
            case wrongKey, keyReplaced, repositoryDamaged, notARepository, alreadyInitialized,
                 dataDamaged, dataMissing, staleRepository, partialBackup, snapshotNotFound,
                 pathNotFound, targetNotEmpty, fileSystem, storage, invalidArgument, cancelled
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The key does not open this repository (the config's MAC did not verify).
        public static let wrongKey = Code(.wrongKey)
        /// The key opened this repository once but was replaced by a key rotation (`coffer key rotate`):
        /// the message says when, and how to get the new key. A wrong key as well (CLI exit 12).
        public static let keyReplaced = Code(.keyReplaced)
        /// The repository's config is damaged or missing, or the storage holds no repository.
        public static let repositoryDamaged = Code(.repositoryDamaged)
        /// No repository at this location (no `config` object).
        public static let notARepository = Code(.notARepository)
        /// `initialize` found an existing repository; nothing was changed.
        public static let alreadyInitialized = Code(.alreadyInitialized)
        /// An object (pack, index, snapshot, blob) failed verification: wrong name hash,
        /// failed decryption, malformed, or an id that does not match its plaintext.
        public static let dataDamaged = Code(.dataDamaged)
        /// An object that the repository refers to does not exist.
        public static let dataMissing = Code(.dataMissing)
        /// The repository shows an older head than this device has seen (rollback or a stale copy).
        public static let staleRepository = Code(.staleRepository)
        /// A backup completed but some files could not be read; see ``BackupSummary/unreadable``.
        public static let partialBackup = Code(.partialBackup)
        /// No snapshot matches the given id, prefix or `latest`.
        public static let snapshotNotFound = Code(.snapshotNotFound)
        /// A path asked for (list, restore include) is not in the snapshot.
        public static let pathNotFound = Code(.pathNotFound)
        /// Restore target is not empty and overwrite was not allowed.
        public static let targetNotEmpty = Code(.targetNotEmpty)
        /// A local file-system operation failed (reading the source, writing the target).
        public static let fileSystem = Code(.fileSystem)
        /// The storage backend failed; ``underlying`` holds the ``StorageError``.
        public static let storage = Code(.storage)
        /// An argument was not acceptable (bad path, bad policy, duplicate names).
        public static let invalidArgument = Code(.invalidArgument)
        /// The operation was cancelled; nothing written is referenced by a new snapshot.
        public static let cancelled = Code(.cancelled)

        public static var allCases: [Code] { Base.allCases.map(Code.init) }
        /// The code's name (`wrongKey`), for logs and JSON.
        public var description: String { base.rawValue }
    }

    public var code: Code
    /// The repository object concerned (`data/ab/ab12...`, `index/...`, `snapshots/...`, or
    /// `blob <id>` for a blob inside a pack), if any.
    public var object: String?
    /// The local path concerned (source file on backup, target file on restore), if any.
    public var path: String?
    /// What happened and what to do, in words a user can act on.
    public var message: String
    /// The underlying error, for logs.
    public var underlying: (any Error & Sendable)?
    /// With ``Code/wrongKey``: the single mistyped or swapped digit that explains the failure, when
    /// one does (the key was typed from paper or a password manager with one slip).
    public var keyTypo: KeyTypo?

    public init(_ code: Code, object: String? = nil, path: String? = nil, message: String,
                underlying: (any Error & Sendable)? = nil) {
        self.code = code
        self.object = object
        self.path = path
        self.message = message
        self.underlying = underlying
    }

    public var description: String { message }
}
