import CofferBackup
import CofferCore
import CofferRealm
import CofferStorage
import CofferVault
import Foundation
import Logging

/// A check of the demo that did not hold: the step and what was expected.
struct DemoCheckFailed: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// The demo's eight steps. Each prints what it does in plain words and checks what it claims.
final class Demo: @unchecked Sendable {
    let root: URL
    let messageCount: Int
    let password = "correct horse battery staple"
    let user = "alice@example.org"

    var phone: SamplePhone { SamplePhone(root: root.appendingPathComponent("phone")) }
    var cloud: URL { root.appendingPathComponent("cloud") }
    var realmsDir: URL { root.appendingPathComponent("realms") }
    var phoneHome: URL { root.appendingPathComponent("devices/old-phone") }

    // State carried between steps.
    private var cluster: RealmCluster?
    private var key: BackupKey?
    private var repositoryID = ""
    private var firstStored: Int64 = 0
    private var firstNew: Int64 = 0

    init(root: URL, messages: Int) {
        self.root = root
        self.messageCount = messages
    }

    /// Runs every step; prints a verdict. Returns whether all checks passed.
    func run() async -> Bool {
        let started = ContinuousClock.now
        Terminal.line("Coffer demo: end-to-end encrypted backup of a chat app, entirely on this machine.")
        Terminal.line("Working in \(root.path)\n")
        let steps: [(String, () async throws -> Void)] = [
            ("Make a sample phone", makePhone),
            ("Start 5 vault realms and protect a new backup key with a password", enableVault),
            ("Back up, and look at what the cloud storage sees", firstBackup),
            ("A day of new messages and a photo: back up again", secondBackup),
            ("New phone: recover the key with the password (one typo first)", recoverOnNewPhone),
            ("Two realms go down: recover anyway, restore, verify everything", recoverWithTwoDown),
            ("A throwaway account: exhaust the guesses, the key is gone for good", exhaustGuesses),
            ("No vault at all: restore with the 64-digit key", restoreWithDigits),
        ]
        var failed: (Int, String, String)? = nil
        for (i, (title, body)) in steps.enumerated() {
            Terminal.line("[\(i + 1)/\(steps.count)] \(title)")
            do {
                try await body()
            } catch {
                failed = (i + 1, title, String(describing: error))
                break
            }
            Terminal.line("")
        }
        await cluster?.stop()
        let seconds = Double((ContinuousClock.now - started).components.seconds)
        if let (n, title, why) = failed {
            Terminal.line("  ✗ \(why)")
            Terminal.line("\nDEMO FAILED at step \(n) (\(title)).")
            return false
        }
        Terminal.line("Every check passed in \(Int(seconds)) s.")
        return true
    }

    private func say(_ text: String) { Terminal.line("      " + text) }
    private func ok(_ text: String) { Terminal.line("    ✓ " + text) }

    // MARK: 1

    private func makePhone() async throws {
        let p = try SamplePhone.make(at: phone.root, messages: messageCount)
        let media = try Self.files(under: p.media)
        say("chat database \(p.database.path.replacingOccurrences(of: root.path + "/", with: "")): "
            + "\(messageCount) messages in 40 chats (SQLite, WAL mode)")
        say("\(media.count) media files (\(Units.bytes(media.reduce(0) { $0 + $1.size }))) and a settings file")
        let rows = try SamplePhone.messages(in: p.database)
        guard rows.count == messageCount else { throw DemoCheckFailed("the sample database holds \(rows.count) messages, not \(messageCount)") }
        ok("sample phone ready")
    }

    // MARK: 2

    private func enableVault() async throws {
        let cluster = try await RealmCluster.start(layout: RealmClusterLayout(directory: realmsDir, count: 5, threshold: 3))
        self.cluster = cluster
        for r in cluster.realms { say("realm \(r.number) listening on \(r.url)") }
        let key = BackupKey()
        self.key = key
        let storage = try LocalStorage(root: cloud.path, create: true)
        let repo = try await Repository.initialize(storage: storage, key: key, deviceStore: DeviceKeyStore(home: phoneHome))
        repositoryID = repo.repositoryID
        say("made a 32-byte backup key on the phone and an encrypted repository in cloud/")
        let vault = try await DemoVault(cluster: cluster)
        try await vault.register(key: key, password: password, user: user)
        say("stored the key in the vault behind the password \"\(password)\" for \(user)")
        // What a realm holds: look for the user, the password and the key in every realm's files.
        let needles: [(String, [UInt8])] = [
            ("the user id", Array(user.utf8)), ("the password", Array(password.utf8)),
            ("the key", key.withUnsafeBytes { Array($0) }), ("the key's digits", Array(key.digits.utf8)),
        ]
        for r in cluster.realms {
            let files = try Self.files(under: r.directory.url)
            var bytes = 0
            for f in files {
                let data = try Data(contentsOf: f.url)
                bytes += data.count
                for (what, needle) in needles where Self.contains(data, needle) {
                    throw DemoCheckFailed("realm \(r.number)'s file \(f.url.lastPathComponent) contains \(what)")
                }
            }
            say("realm \(r.number): \(files.count) files, \(Units.bytes(bytes)); no user id, password or key in them")
        }
        ok("each realm holds only a sealed, password-blinded share")
    }

    // MARK: 3

    private func firstBackup() async throws {
        let summary = try await backup(label: "first backup")
        firstStored = summary.bytesStored
        firstNew = summary.bytesNew
        let storage = try LocalStorage(root: cloud.path)
        let objects = try await storage.list(prefix: "").sorted { $0.name < $1.name }
        say("the storage provider sees \(objects.count) objects, for example:")
        for o in objects.prefix(6) { say("  \(o.name.padding(toLength: 76, withPad: " ", startingAt: 0)) \(Units.bytes(o.size))") }
        // Search every stored byte for a message text and for file names.
        let needles = [SamplePhone.secretMessage, "msgstore", "IMG-", "preferences", "Voice Notes", "SQLite format 3"]
        for o in objects {
            let data = try await storage.get(o.name)
            for n in needles where Self.contains(data, Array(n.utf8)) {
                throw DemoCheckFailed("object \(o.name) contains the plaintext \"\(n)\"")
            }
        }
        say("searched all \(objects.count) objects for \"\(SamplePhone.secretMessage)\", file names and the SQLite header")
        ok("nothing readable: no message text, no file names, no database header")
    }

    // MARK: 4

    private func secondBackup() async throws {
        try phone.addDay(messages: 200)
        say("the phone received 200 messages and a 300 KB photo")
        let summary = try await backup(label: "second backup")
        say("new content \(Units.bytes(summary.bytesNew)) this time, against \(Units.bytes(firstNew)) the first time "
            + "(\(summary.filesUnchanged) files unchanged and not re-read)")
        say("uploaded \(Units.bytes(summary.bytesStored)) (first time \(Units.bytes(firstStored))): every object is padded "
            + "to at least 1 MiB so the provider cannot tell how much changed")
        guard summary.bytesNew < firstNew / 2 else {
            throw DemoCheckFailed("the second backup stored \(summary.bytesNew) new bytes, not much less than the first (\(firstNew))")
        }
        ok("incremental: only the changed database pages and the new photo were uploaded")
    }

    // MARK: 5

    private func recoverOnNewPhone() async throws {
        guard let cluster else { throw DemoCheckFailed("no realms") }
        let vault = try await DemoVault(cluster: cluster)
        say("the new phone knows only the account (\(user)) and the password")
        do {
            _ = try await vault.recover(password: "correct horse battery stable", user: user)
            throw DemoCheckFailed("a wrong password recovered a key")
        } catch let wrong as DemoVault.WrongPassword {
            say("typo \"correct horse battery stable\": wrong password, \(wrong.attemptsLeft) guesses left")
        }
        let recovered = try await vault.recover(password: password, user: user)
        guard let key, recovered.constantTimeEquals(key) else { throw DemoCheckFailed("the recovered key is not the phone's key") }
        let newHome = root.appendingPathComponent("devices/new-phone")
        try DeviceKeyStore(home: newHome).saveKey(recovered, repositoryID: repositoryID)
        say("right password: the key is back (written to the new phone's 0600 key file); the vault rotated its shares")
        let anchored = try await vault.client.readHeads(key: recovered, user: user).heads(repositoryIDHex: repositoryID)
        say(HeadAnchor.latestLine(anchored))
        let storage = try LocalStorage(root: cloud.path)
        let repo = try await Repository.open(storage: storage, key: recovered, deviceStore: DeviceKeyStore(home: newHome))
        try repo.adoptHeads(anchored.map {
            DeviceHead(repositoryID: $0.repositoryIDHex, writerID: $0.writerIDHex, seq: $0.seq, snapshotID: $0.snapshotIDHex)
        })
        try await repo.verifyHeads(doing: "restore from this repository")
        say("the storage shows that snapshot: it is not serving an older copy")
        ok("recovered the same key; the typo cost one guess")
    }

    // MARK: 6

    private func recoverWithTwoDown() async throws {
        guard let cluster else { throw DemoCheckFailed("no realms") }
        await cluster.realms[0].stop()
        await cluster.realms[1].stop()
        say("stopped realms 1 and 2")
        let vault = try await DemoVault(cluster: cluster)
        let recovered = try await vault.recover(password: password, user: user)
        guard let key, recovered.constantTimeEquals(key) else { throw DemoCheckFailed("the recovered key is not the phone's key") }
        say("recovered the key from realms 3, 4 and 5")
        let target = root.appendingPathComponent("restored")
        try await restoreAndVerify(key: recovered, into: target, label: "restore")
        try await cluster.realms[0].start()
        try await cluster.realms[1].start()
        say("realms 1 and 2 are back")
        ok("two realms down changed nothing; every file and every message matches")
    }

    // MARK: 7

    private func exhaustGuesses() async throws {
        guard let cluster else { throw DemoCheckFailed("no realms") }
        let vault = try await DemoVault(cluster: cluster)
        let throwaway = "throwaway-\(UUID().uuidString.prefix(6).lowercased())@example.org"
        let secret = BackupKey()
        try await vault.register(key: secret, password: "hunter2-but-longer", user: throwaway)
        say("registered a throwaway key for \(throwaway)")
        var line: [String] = []
        var guesses = 0
        for guess in 1...20 {
            do {
                guesses += 1
                _ = try await vault.recover(password: "guess number \(guess)", user: throwaway)
                throw DemoCheckFailed("a wrong password recovered a key")
            } catch let wrong as DemoVault.WrongPassword {
                line.append("\(wrong.attemptsLeft)")
            } catch is DemoVault.Locked {
                line.append("locked")
                break
            }
        }
        say("\(guesses) wrong guesses; guesses left after each: \(line.joined(separator: " "))")
        guard guesses == 10 else { throw DemoCheckFailed("the vault answered locked after \(guesses) guesses, not 10") }
        do {
            _ = try await vault.recover(password: "hunter2-but-longer", user: throwaway)
            throw DemoCheckFailed("the right password still worked after the guesses ran out")
        } catch is DemoVault.Locked {
            say("the right password now gets: locked, the key was destroyed at every realm")
        }
        ok("after 10 wrong guesses the key is gone for good")
    }

    // MARK: 8

    private func restoreWithDigits() async throws {
        guard let key else { throw DemoCheckFailed("no key") }
        say("the user wrote down the 64-digit key instead: \(String(key.groupedDigits.prefix(14)))… (64 digits)")
        let typed = try BackupKey(digits: key.groupedDigits.uppercased().replacingOccurrences(of: " ", with: "-"))
        let target = root.appendingPathComponent("restored-with-64-digits")
        try await restoreAndVerify(key: typed, into: target, label: "restore")
        ok("restored with the 64-digit key alone, no vault involved")
    }

    // MARK: helpers

    private func backup(label: String) async throws -> BackupSummary {
        let storage = try LocalStorage(root: cloud.path)
        let repo = try await Repository.open(storage: storage, key: key!, deviceStore: DeviceKeyStore(home: phoneHome))
        var line = ProgressLine(enabled: Terminal.stderrIsTTY)
        var summary: BackupSummary?
        for try await event in repo.backup(paths: [phone.root.path]) {
            switch event {
            case .progress(let p):
                line.update(filesDone: p.filesDone, filesTotal: p.filesTotal, bytesDone: p.bytesDone, bytesTotal: p.bytesTotal,
                            elapsed: p.elapsed.seconds, current: p.currentPath)
            case .finished(let s):
                summary = s
            case .scanned, .unreadable:
                break
            }
        }
        line.clear()
        guard let summary else { throw DemoCheckFailed("the \(label) ended without a summary") }
        guard !summary.isPartial else { throw DemoCheckFailed("the \(label) could not read \(summary.unreadable.map(\.path))") }
        say("\(label): snapshot \(summary.snapshotID.prefix(8)), \(summary.filesNew + summary.filesChanged + summary.filesUnchanged) files, "
            + "read \(Units.bytes(summary.bytesRead)), stored \(Units.bytes(summary.bytesStored)) after dedup and compression "
            + "in \(Units.seconds(summary.duration.seconds))")
        if let cluster, let info = try? await repo.snapshot(matching: summary.snapshotID),
           let head = AnchoredHead(repositoryIDHex: repo.repositoryID, writerIDHex: info.writerID, seq: info.seq,
                                   snapshotIDHex: info.id, time: info.time) {
            // Anchor the head off the storage, as the CLI does after every backup.
            try await DemoVault(cluster: cluster).client.storeHead(head, key: key!, user: user)
            say("anchored the backup head (seq \(info.seq)) in the vault realms")
        }
        return summary
    }

    /// Restores the latest snapshot with `key` into `target` and compares it with the phone.
    private func restoreAndVerify(key: BackupKey, into target: URL, label: String) async throws {
        let storage = try LocalStorage(root: cloud.path)
        let repo = try await Repository.open(storage: storage, key: key, deviceStore: nil)
        let summary = try await repo.restore(snapshot: "latest", target: target)
        guard summary.isComplete else { throw DemoCheckFailed("the \(label) did not complete") }
        let restoredPhone = SamplePhone(root: target.appendingPathComponent(phone.root.lastPathComponent))
        // Every media and settings file byte for byte.
        let original = try Self.files(under: phone.root).filter { !$0.url.path.contains("/Databases/") }
        for f in original {
            let rel = String(f.url.path.dropFirst(phone.root.path.count))
            let copy = URL(fileURLWithPath: restoredPhone.root.path + rel)
            guard let a = try? Data(contentsOf: f.url), let b = try? Data(contentsOf: copy), a == b else {
                throw DemoCheckFailed("restored file \(rel) differs from the phone's")
            }
        }
        // The database: integrity and every message.
        let integrity = try SamplePhone.integrityCheck(restoredPhone.database)
        guard integrity == "ok" else { throw DemoCheckFailed("restored database: integrity_check says \(integrity)") }
        let want = try SamplePhone.messages(in: phone.database)
        let got = try SamplePhone.messages(in: restoredPhone.database)
        guard want == got else { throw DemoCheckFailed("restored database has \(got.count) messages, the phone \(want.count), or they differ") }
        say("\(label): \(original.count) files identical, database integrity ok, all \(got.count) messages match")
    }

    struct FileEntry { var url: URL; var size: Int }

    static func files(under dir: URL) throws -> [FileEntry] {
        guard let e = FileManager.default.enumerator(at: dir, includingPropertiesForKeys: [.isRegularFileKey, .fileSizeKey]) else { return [] }
        var out: [FileEntry] = []
        for case let url as URL in e {
            let v = try url.resourceValues(forKeys: [.isRegularFileKey, .fileSizeKey])
            if v.isRegularFile == true { out.append(FileEntry(url: url, size: v.fileSize ?? 0)) }
        }
        return out.sorted { $0.url.path < $1.url.path }
    }

    static func contains(_ data: Data, _ needle: [UInt8]) -> Bool {
        guard !needle.isEmpty, data.count >= needle.count else { return false }
        return data.withUnsafeBytes { raw in
            let hay = raw.bindMemory(to: UInt8.self)
            let first = needle[0]
            var i = 0
            let last = hay.count - needle.count
            while i <= last {
                if hay[i] == first {
                    var j = 1
                    while j < needle.count, hay[i + j] == needle[j] { j += 1 }
                    if j == needle.count { return true }
                }
                i += 1
            }
            return false
        }
    }
}
