import CofferBackup
import CofferCore
import CofferKit
import CofferStorage
import CofferTesting
import CofferVault
import Foundation
import Synchronization
import Testing

/// The app's flow through CofferKit, against five real realms on loopback and a real folder
/// repository: create with a password, back up (heads anchored), recover on a new device, restore;
/// a storage provider that rolls the repository back is refused on a new device before anything is
/// restored; a wrong password costs a guess and says how many are left.
@Suite("CofferKit: Backups")
struct BackupsTests {
    final class Events: Sendable {
        let seen = Mutex<[BackupsEvent]>([])
        func record(_ e: BackupsEvent) { seen.withLock { $0.append(e) } }
        var anchored: Int {
            seen.withLock { $0.filter { if case .headStored(.anchored) = $0 { return true } else { return false } }.count }
        }
        var latest: AnchoredHead?? {
            seen.withLock { all in
                for e in all.reversed() { if case .latestAnchoredBackup(let h) = e { return .some(h) } }
                return nil
            }
        }
    }

    /// Runs `body` with five real realms on loopback (CofferTesting's `withRealmCluster`: fast
    /// scrypt, 10 guesses, short passwords allowed) and alice's access to them; the realms are
    /// stopped when `body` returns or throws.
    static func withVault(_ root: URL, _ body: (VaultAccess) async throws -> Void) async throws {
        try await withRealmCluster { cluster in
            let client = try cluster.vaultClient(repairStore: VaultRepairStore(home: root.appendingPathComponent("vault-repairs")))
            try await body(VaultAccess(client: client, user: "alice", configurationPath: cluster.vaultConfigurationURL.path))
        }
    }

    static func files(_ dir: URL) throws -> [String: Data] {
        var out: [String: Data] = [:]
        let e = FileManager.default.enumerator(at: dir, includingPropertiesForKeys: [.isRegularFileKey])!
        for case let url as URL in e where (try url.resourceValues(forKeys: [.isRegularFileKey])).isRegularFile == true {
            out[String(url.path.dropFirst(dir.path.count))] = try Data(contentsOf: url)
        }
        return out
    }

    @Test("create with a password, back up, recover on a new device and restore; a rolled-back repository is refused there")
    func appFlow() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-kit-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let repoDir = root.appendingPathComponent("repo")
        let src = root.appendingPathComponent("Chats")
        try FileManager.default.createDirectory(at: src.appendingPathComponent("Media"), withIntermediateDirectories: true)
        try Data("hello\n".utf8).write(to: src.appendingPathComponent("notes.txt"))
        try Data((0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }).write(to: src.appendingPathComponent("Media/a.bin"))

        try await Self.withVault(root) { vault in
            // Device A creates the repository, protected by a password, and backs up twice.
            let a = Events()
            let phone = DeviceHome(root.appendingPathComponent("phone"))
            let (backups, key) = try await Backups.create(storage: try LocalStorage(root: repoDir.path, create: true), home: phone,
                                                          vault: vault, password: "correct horse", events: a.record)
            #expect(try phone.keys.loadKey(repositoryID: backups.repositoryID)?.constantTimeEquals(key) == true, "the key is in the device home")
            #expect(phone.vaultLink(repositoryID: backups.repositoryID)?.user == "alice")
            _ = try await backups.backup(paths: [src.path])
            #expect(a.anchored == 1, "the first backup's head was anchored")

            // The storage's state after the first backup, kept by a provider that will roll back.
            let old = root.appendingPathComponent("repo-day1")
            try FileManager.default.copyItem(at: repoDir, to: old)

            try Data("hello again\n".utf8).write(to: src.appendingPathComponent("notes.txt"))
            let second = try await backups.backup(paths: [src.path])
            #expect(a.anchored == 2)
            #expect(a.latest??.seq == 1, "the second backup saw the first one's head")

            // Device B: a new phone with the password only.
            let b = Events()
            let newPhone = DeviceHome(root.appendingPathComponent("new-phone"))
            let recovered = try await Backups.recover(storage: try LocalStorage(root: repoDir.path), home: newPhone,
                                                      vault: vault, password: "correct horse", events: b.record)
            #expect(recovered.repositoryID == backups.repositoryID)
            #expect(b.latest??.snapshotIDHex == second.snapshotID, "the new device was told of the latest backup")
            #expect(try newPhone.keys.loadKey(repositoryID: recovered.repositoryID)?.constantTimeEquals(key) == true)
            let out = root.appendingPathComponent("restored")
            let restored = try await recovered.restore(snapshot: "latest", target: out)
            #expect(restored.isComplete)
            #expect(try Self.files(out.appendingPathComponent("Chats")) == Self.files(src))

            // The provider rolls the repository back to day 1. A third device with the password is
            // refused before anything is restored, and so is device B.
            try FileManager.default.removeItem(at: repoDir)
            try FileManager.default.copyItem(at: old, to: repoDir)
            let tablet = DeviceHome(root.appendingPathComponent("tablet"))
            do {
                _ = try await Backups.recover(storage: try LocalStorage(root: repoDir.path), home: tablet,
                                              vault: vault, password: "correct horse")
                Issue.record("a rolled-back repository was handed over on a new device")
            } catch let e as BackupError {
                #expect(e.code == .staleRepository, "\(e)")
            }
            #expect(try tablet.keys.loadKey(repositoryID: backups.repositoryID) == nil, "no key saved for a refused repository")
            let again = try await Backups.open(storage: try LocalStorage(root: repoDir.path), home: newPhone, vault: vault)
            let target = root.appendingPathComponent("restored-from-old")
            do {
                _ = try await again.restore(snapshot: "latest", target: target)
                Issue.record("a rolled-back repository was restored from")
            } catch let e as BackupError {
                #expect(e.code == .staleRepository, "\(e)")
            }
            #expect(!FileManager.default.fileExists(atPath: target.appendingPathComponent("Chats").path), "nothing restored")
        }
    }

    @Test("a wrong password costs one guess and says how many are left; no key is saved")
    func wrongPassword() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-kit-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let repoDir = root.appendingPathComponent("repo")
        try await Self.withVault(root) { vault in
            let (backups, _) = try await Backups.create(storage: try LocalStorage(root: repoDir.path, create: true),
                                                        home: DeviceHome(root.appendingPathComponent("phone")),
                                                        vault: vault, password: "right one")
            let elsewhere = DeviceHome(root.appendingPathComponent("other"))
            do {
                _ = try await Backups.recover(storage: try LocalStorage(root: repoDir.path), home: elsewhere,
                                              vault: vault, password: "wrong one")
                Issue.record("a wrong password recovered the key")
            } catch let e as VaultError {
                guard e.code == .wrongPassword, let left = e.attemptsLeft else { Issue.record("\(e)"); return }
                #expect(left == 9)
            }
            #expect(try elsewhere.keys.loadKey(repositoryID: backups.repositoryID) == nil)
            // Opening without a key on this device names the problem and what to do.
            do {
                _ = try await Backups.open(storage: try LocalStorage(root: repoDir.path), home: elsewhere)
                Issue.record("opened without a key")
            } catch let e as KeyFileError {
                #expect(e.message.contains("holds no key") && !e.message.contains("coffer "), "\(e.message)")
            }
        }
    }
}
