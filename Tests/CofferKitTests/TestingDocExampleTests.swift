// docs/LIBRARY.md's "Testing your integration" example (withRealmCluster), compiled and run here.
// Everything between the two EXAMPLE markers must stay identical to the code block in
// docs/LIBRARY.md (LibraryDocTests in the CLI tests compares them).

// EXAMPLE BEGIN
import CofferKit
import CofferStorage
import CofferTesting
import Foundation
import Testing

@Test func theNewPhoneRestoresWithThePasswordWhileTwoRealmsAreDown() async throws {
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent(UUID().uuidString)
    defer { try? FileManager.default.removeItem(at: folder) }
    let chats = folder.appendingPathComponent("Chats")
    try FileManager.default.createDirectory(at: chats, withIntermediateDirectories: true)
    try Data("see you tomorrow\n".utf8).write(to: chats.appendingPathComponent("chat.txt"))
    let storage = try LocalStorage(root: folder.appendingPathComponent("repo").path, create: true)

    try await withRealmCluster(count: 5, threshold: 3) { cluster in
        let phone = DeviceHome(folder.appendingPathComponent("phone"))
        let vault = VaultAccess(client: try cluster.vaultClient(repairStore: phone.vaultRepairs), user: "alice")
        let (backups, _) = try await Backups.create(storage: storage, home: phone, vault: vault, password: "pw")
        _ = try await backups.backup(paths: [chats.path])

        await cluster.stopRealm(1)
        await cluster.stopRealm(2)  // any 3 of the 5 still recover the key
        let newPhone = DeviceHome(folder.appendingPathComponent("new-phone"))
        let newVault = VaultAccess(client: try cluster.vaultClient(repairStore: newPhone.vaultRepairs), user: "alice")
        let recovered = try await Backups.recover(storage: storage, home: newPhone, vault: newVault, password: "pw")
        let restored = try await recovered.restore(snapshot: "latest", target: folder.appendingPathComponent("out"))
        #expect(restored.isComplete && restored.filesRestored == 1)
    }  // every realm has stopped here, also when the body throws
}
// EXAMPLE END
