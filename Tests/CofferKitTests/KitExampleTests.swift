// The CofferKit example of docs/LIBRARY.md, compiled and run here so the documentation cannot rot.
// Everything between the two EXAMPLE markers must stay identical to the code block in
// docs/LIBRARY.md (LibraryDocTests in the CLI tests compares them).
import Foundation
import Testing

// EXAMPLE BEGIN
import CofferBackup
import CofferKit
import CofferStorage
import CofferVault

/// First launch: create the repository with a new key, protect the key with the user's password
/// in the vault, and back up. Returns the snapshot id.
func firstBackup(appFolder: URL, chats: URL, storage: any Storage, vault: VaultAccess, password: String) async throws -> String {
    let home = DeviceHome(appFolder.appendingPathComponent("Coffer"))
    let (backups, key) = try await Backups.create(storage: storage, home: home, vault: vault, password: password) { event in
        if case .headStored(.failed(_, let error)) = event {
            print("backup saved; its rollback protection is retried next time (\(error))")
        }
    }
    print("Your 64-digit backup key, keep it offline: \(key.groupedDigits)")
    let summary = try await backups.backup(paths: [chats.path]) { event in
        if case .progress(let p) = event { print("\(p.bytesDone) of \(p.bytesTotal) bytes") }
    }
    return summary.snapshotID
}

/// A new phone with only the password: recover the key, check the repository against the heads
/// anchored in the vault, restore the latest backup.
func restoreOnNewPhone(appFolder: URL, storage: any Storage, vault: VaultAccess, password: String,
                       into target: URL) async throws -> RestoreSummary {
    let home = DeviceHome(appFolder.appendingPathComponent("Coffer"))
    do {
        let backups = try await Backups.recover(storage: storage, home: home, vault: vault, password: password) { event in
            if case .latestAnchoredBackup(let head?) = event { print("latest backup: \(head.time)") }
        }
        return try await backups.restore(snapshot: "latest", target: target)
    } catch let error as VaultError {
        if error.code == .wrongPassword, let left = error.attemptsLeft { print("wrong password: \(left) guesses left") }
        throw error
    } catch let error as BackupError where error.code == .staleRepository {
        print("the storage serves an older copy of your backups than the vault has seen; nothing was restored")
        throw error
    }
}
// EXAMPLE END

@Test func kitExampleBacksUpAndRestoresOnANewPhone() async throws {
    let root = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-kit-example-\(UUID().uuidString)")
    defer { try? FileManager.default.removeItem(at: root) }
    let chats = root.appendingPathComponent("Chats")
    try FileManager.default.createDirectory(at: chats, withIntermediateDirectories: true)
    try Data("see you tomorrow\n".utf8).write(to: chats.appendingPathComponent("chat-1.txt"))
    let repo = root.appendingPathComponent("repo").path
    try await BackupsTests.withVault(root) { vault in
        let id = try await firstBackup(appFolder: root.appendingPathComponent("phone"), chats: chats,
                                       storage: try LocalStorage(root: repo, create: true), vault: vault, password: "pw")
        await #expect(throws: VaultError.self) {
            try await restoreOnNewPhone(appFolder: root.appendingPathComponent("new"), storage: try LocalStorage(root: repo),
                                        vault: vault, password: "not it", into: root.appendingPathComponent("nope"))
        }
        let restored = try await restoreOnNewPhone(appFolder: root.appendingPathComponent("new"), storage: try LocalStorage(root: repo),
                                                   vault: vault, password: "pw", into: root.appendingPathComponent("out"))
        #expect(restored.isComplete && restored.filesRestored == 1)
        #expect(try Data(contentsOf: root.appendingPathComponent("out/Chats/chat-1.txt")) == Data("see you tomorrow\n".utf8))
        #expect(try await Backups.open(storage: try LocalStorage(root: repo), home: DeviceHome(root.appendingPathComponent("new/Coffer")))
            .snapshots().map(\.id) == [id])
    }
}
