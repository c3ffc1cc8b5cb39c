#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Crypto
import CofferCore

/// Proof material for replacing a user's *active* registration: the unlock key `U = HKDF(S, "unlock")`
/// of each registration version this client recovered or made. A realm stores `tag_i = HMAC(U, realmID ‖ version)`;
/// R2's replace proof is keyed by it (``VaultDerivation/replaceProof``), so only a client that
/// knows the current password (it recovered `S`) or that made the registration itself can replace
/// it. `U` does not unwrap `W` (that needs `S`). Secret: kept in memory, and in the 0600 pending-change
/// file while a change has not reached every realm. `description` shows no secret.
public struct VaultReplaceCredential: Sendable, CustomStringConvertible {
    var unlockKeys: [RecordVersion: SymmetricKey]

    init(unlockKeys: [RecordVersion: SymmetricKey]) { self.unlockKeys = unlockKeys }

    /// For the registration of `version` whose secret is `secret`.
    init(version: RecordVersion, secret: SymmetricKey) {
        self.unlockKeys = [version: VaultDerivation.unlockKey(secret: secret)]
    }

    /// The versions this credential can replace.
    public var versions: [RecordVersion] { unlockKeys.keys.sorted { $0.hex < $1.hex } }

    public var description: String { "VaultReplaceCredential(\(unlockKeys.count) versions)" }

    /// Both sets of versions (a change that has not reached every realm leaves some on the older one).
    func merging(_ other: VaultReplaceCredential?) -> VaultReplaceCredential {
        guard let other else { return self }
        return VaultReplaceCredential(unlockKeys: unlockKeys.merging(other.unlockKeys) { a, _ in a })
    }

    /// Keeps only `versions` (what the realms still pending may hold).
    func restricted(to versions: Set<RecordVersion>) -> VaultReplaceCredential {
        VaultReplaceCredential(unlockKeys: unlockKeys.filter { versions.contains($0.key) })
    }

    /// R2's replace proof for replacing `current` at `realmID` with `newVersion`, or all zeros when
    /// this credential does not know `current` (or there is nothing to replace).
    func proof(realmID: RealmID, current: RecordVersion, newVersion: RecordVersion, pendingID: PendingID) -> [UInt8] {
        guard !current.isZero, let u = unlockKeys[current] else { return zeros(WireSize.replaceProof) }
        let tag = VaultDerivation.unlockTag(unlockKey: u, realmID: realmID, version: current)
        return VaultDerivation.replaceProof(tag: tag, realmID: realmID, currentVersion: current, newVersion: newVersion, pendingID: pendingID)
    }

    /// `[{version, key}]` in hex, for the pending-change file.
    struct FileEntry: Codable {
        var version: String
        var key: String
    }

    var fileEntries: [FileEntry] {
        versions.map { v in FileEntry(version: v.hex, key: unlockKeys[v]!.withUnsafeBytes { Array($0) }.hexString) }
    }

    init(fileEntries: [FileEntry]) throws {
        var keys = [RecordVersion: SymmetricKey]()
        for e in fileEntries {
            guard let v = [UInt8](hexString: e.version), let k = [UInt8](hexString: e.key), k.count == 32 else {
                throw VaultConfigurationError("repair file: bad replace key")
            }
            keys[try RecordVersion(bytes: v)] = SymmetricKey(data: k)
        }
        self.init(unlockKeys: keys)
    }
}

/// How a registration may treat a realm that already holds an *active* registration for the user.
public enum VaultReplaceMode: Sendable {
    /// Never replace one: when any realm reports an active registration, stop before anything is
    /// written (``VaultError/Code/registrationExists``). `enable` without `--reset`.
    case refuse
    /// Replace with proof of the current password (the credential from a recovery or an earlier
    /// registration by this device): change-password, rotation after recovery, key rotate, repair.
    case proof(VaultReplaceCredential)
    /// Replace without proof on `reset`-scoped tokens (a forgotten password). Every realm counts the
    /// reset in the record and in `coffer_realm_resets_total`.
    case reset
}
