#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CofferCore

/// A failure of a repository operation, with enough context to act on (which object, which file)
/// and nothing secret in it. The CLI maps ``Code`` to its exit codes in one place.
public struct BackupError: Error, Sendable, CustomStringConvertible {
    public enum Code: Sendable, Hashable, CaseIterable {
        /// The key does not open this repository (the config's MAC did not verify).
        case wrongKey
        /// The repository's config is damaged or missing, or the storage holds no repository.
        case repositoryDamaged
        /// No repository at this location (no `config` object).
        case notARepository
        /// `initialize` found an existing repository; nothing was changed.
        case alreadyInitialized
        /// An object (pack, index, snapshot, blob) failed verification: wrong name hash,
        /// failed decryption, malformed, or an id that does not match its plaintext.
        case dataDamaged
        /// An object that the repository refers to does not exist.
        case dataMissing
        /// The repository shows an older head than this device has seen (rollback or a stale copy).
        case staleRepository
        /// A backup completed but some files could not be read; see ``BackupSummary/unreadable``.
        case partialBackup
        /// No snapshot matches the given id, prefix or `latest`.
        case snapshotNotFound
        /// A path asked for (list, restore include) is not in the snapshot.
        case pathNotFound
        /// Restore target is not empty and overwrite was not allowed.
        case targetNotEmpty
        /// A local file-system operation failed (reading the source, writing the target).
        case fileSystem
        /// The storage backend failed; ``underlying`` holds the ``StorageError``.
        case storage
        /// An argument was not acceptable (bad path, bad policy, duplicate names).
        case invalidArgument
        /// The operation was cancelled; nothing written is referenced by a new snapshot.
        case cancelled
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
