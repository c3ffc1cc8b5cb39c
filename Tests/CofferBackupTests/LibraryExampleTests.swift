// The example of docs/LIBRARY.md, compiled and run here so the documentation cannot rot.
// Everything between the two EXAMPLE markers must stay identical to the code block in
// docs/LIBRARY.md (a CLI test, LibraryDocTests, compares them). Owned by the CLI helper.
import Foundation
import Testing

// EXAMPLE BEGIN
import CofferBackup
import CofferCore
import CofferStorage

/// Backs up `folder` into the repository in `repositoryFolder` (creating it and a key on first use),
/// showing progress, then restores that snapshot into `target`.
func backUpAndRestore(folder: URL, repositoryFolder: URL, target: URL,
                      device: DeviceKeyStore = DeviceKeyStore()) async throws -> RestoreSummary {
    let storage = try LocalStorage(root: repositoryFolder.path, create: true)

    // Open with this device's key, or create the repository and a key on first use.
    let repo: Repository
    if let id = try? await Repository.readRepositoryID(storage: storage),
       let key = try device.loadKey(repositoryID: id) {
        repo = try await Repository.open(storage: storage, key: key, deviceStore: device)
    } else {
        let key = BackupKey()  // 32 bytes from the system CSPRNG
        repo = try await Repository.initialize(storage: storage, key: key, deviceStore: device)
        print("Your backup key, keep it safe: \(key.groupedDigits)")
    }

    // Back up with progress.
    var snapshotID: String?
    for try await event in repo.backup(paths: [folder.path]) {
        switch event {
        case .scanned(let files, let bytes):
            print("\(files) files, \(bytes) bytes")
        case .progress(let p):
            print("\(p.filesDone)/\(p.filesTotal) files, \(p.bytesDone)/\(p.bytesTotal) bytes")
        case .unreadable(let file):
            print("could not read \(file.path): \(file.reason)")
        case .finished(let summary):
            snapshotID = summary.snapshotID
            print("snapshot \(summary.snapshotID): \(summary.filesNew) new files, \(summary.bytesStored) bytes stored")
        }
    }

    // Restore that snapshot. Every blob is verified; a damaged object never leaves wrong content.
    guard let snapshotID else { throw CancellationError() }
    let restored = try await repo.restore(snapshot: snapshotID, target: target)
    for failure in restored.failures {
        print("not restored: \(failure.path): \(failure.message)")
    }
    return restored
}
// EXAMPLE END

@Test func libraryExampleBacksUpAndRestores() async throws {
    let root = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-library-example-\(UUID().uuidString)")
    defer { try? FileManager.default.removeItem(at: root) }
    let folder = root.appendingPathComponent("Documents")
    try FileManager.default.createDirectory(at: folder.appendingPathComponent("sub"), withIntermediateDirectories: true)
    try Data("hello\n".utf8).write(to: folder.appendingPathComponent("a.txt"))
    try Data(repeating: 7, count: 3 << 20).write(to: folder.appendingPathComponent("sub/b.bin"))
    let device = DeviceKeyStore(home: root.appendingPathComponent("home"))

    let first = try await backUpAndRestore(folder: folder, repositoryFolder: root.appendingPathComponent("repo"),
                                           target: root.appendingPathComponent("out1"), device: device)
    #expect(first.isComplete)
    #expect(first.filesRestored == 2)
    #expect(try Data(contentsOf: root.appendingPathComponent("out1/Documents/sub/b.bin")) == Data(repeating: 7, count: 3 << 20))
    // Second run opens the same repository with the device's key.
    let second = try await backUpAndRestore(folder: folder, repositoryFolder: root.appendingPathComponent("repo"),
                                            target: root.appendingPathComponent("out2"), device: device)
    #expect(second.isComplete)
    #expect(try Data(contentsOf: root.appendingPathComponent("out2/Documents/a.txt")) == Data("hello\n".utf8))
}
