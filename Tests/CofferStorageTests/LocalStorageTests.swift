import CofferStorage
import CofferTesting
import Foundation
import Testing

/// A fresh private folder under the system temporary directory, removed afterwards.
func withTemporaryFolder<T>(_ body: (String) async throws -> T) async throws -> T {
    let path = NSTemporaryDirectory() + "coffer-storage-\(UUID().uuidString.lowercased())"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: path) }
    return try await body(path)
}

@Suite("LocalStorage")
struct LocalStorageTests {
    @Test("passes the storage conformance suite")
    func conformance() async throws {
        try await withTemporaryFolder { root in
            let storage = try LocalStorage(root: root)
            try await StorageConformance(storage: storage).runAll()
        }
    }

    @Test("a missing folder is a clear missingContainer error; create makes it")
    func missingRoot() async throws {
        try await withTemporaryFolder { base in
            let root = base + "/not/there"
            do {
                _ = try LocalStorage(root: root)
                Issue.record("opening a missing folder succeeded")
            } catch let error as StorageError {
                #expect(error.code == .missingContainer)
                #expect(error.message.contains(root))
            }
            let storage = try LocalStorage(root: root, create: true)
            try await storage.put("config", data: Data("x".utf8))
            #expect(FileManager.default.fileExists(atPath: root + "/config"))

            // A file where the folder should be.
            _ = FileManager.default.createFile(atPath: base + "/file", contents: Data())
            #expect(throws: StorageError.self) { try LocalStorage(root: base + "/file") }
        }
    }

    @Test("objects are files under the root; temporary files are never listed and can be cleaned")
    func layoutAndTemporaries() async throws {
        try await withTemporaryFolder { root in
            let storage = try LocalStorage(root: root)
            let data = randomData(100)
            try await storage.put("data/3f/3fa1", data: data)
            #expect(FileManager.default.contents(atPath: root + "/data/3f/3fa1") == data)
            let mode = try FileManager.default.attributesOfItem(atPath: root + "/data/3f/3fa1")[.posixPermissions] as? Int
            #expect(mode == 0o600, "objects are private to the user")
            // What a crashed writer leaves behind, and junk a desktop drops in.
            _ = FileManager.default.createFile(atPath: root + "/data/3f/.3fa2.1234~tmp", contents: Data([1, 2]))
            _ = FileManager.default.createFile(atPath: root + "/.DS_Store", contents: Data([1]))
            #expect(try await storage.list(prefix: "").map(\.name) == ["data/3f/3fa1"])
            #expect(try storage.removeTemporaryFiles() == 1)
            #expect(!FileManager.default.fileExists(atPath: root + "/data/3f/.3fa2.1234~tmp"))
            #expect(FileManager.default.fileExists(atPath: root + "/.DS_Store"), "only our own temporary files are removed")
        }
    }

    @Test("StorageLocation opens plain paths and file:// URLs, and rejects other schemes")
    func location() async throws {
        try await withTemporaryFolder { root in
            #expect(try StorageLocation.open(root).root == root)
            #expect(try StorageLocation.open("file://" + root).root == root)
            #expect(try StorageLocation.open("file://localhost" + root).root == root)
            #expect(try StorageLocation.localPath("file:///tmp/a%20b") == "/tmp/a b")
            #expect(throws: StorageError.self) { try StorageLocation.open("ftp://host/x") }
            #expect(throws: StorageError.self) { try StorageLocation.open("file://relative") }
            do {
                _ = try StorageLocation.open("s3://bucket/prefix")
                Issue.record("s3:// opened as a folder")
            } catch let error as StorageError {
                #expect(error.code == .invalidName)
            }
        }
    }

    /// ENOSPC for real: a 1 MiB tmpfs. Needs root on Linux (CI and this machine run as root);
    /// elsewhere the test is reported as skipped with this reason.
    @Test("a full disk gives noSpace, removes the temporary file and leaves the old object intact",
          .enabled(if: SmallFileSystem.available, "needs root on Linux to mount a 1 MiB tmpfs"))
    func fullDisk() async throws {
        try await withTemporaryFolder { base in
            let fs = try SmallFileSystem(at: base + "/small", size: "1m")
            defer { fs.unmount() }
            let storage = try LocalStorage(root: fs.path)
            let old = randomData(100 * 1024)
            try await storage.put("data/00/obj", data: old)
            do {
                try await storage.put("data/00/obj", data: randomData(2 << 20))
                Issue.record("writing 2 MiB to a 1 MiB file system succeeded")
            } catch let error as StorageError {
                #expect(error.code == .noSpace, "got \(error.code): \(error.message)")
                #expect(error.message.contains("no space"))
            }
            #expect(try await storage.get("data/00/obj") == old, "the old object is untouched")
            let leftovers = try FileManager.default.contentsOfDirectory(atPath: fs.path + "/data/00")
            #expect(leftovers == ["obj"], "no temporary file is left behind: \(leftovers)")
            do {
                try await storage.put("data/00/new", data: randomData(2 << 20))
                Issue.record("a new 2 MiB object fit")
            } catch let error as StorageError {
                #expect(error.code == .noSpace)
            }
            #expect(try await storage.stat("data/00/new") == nil, "nothing half-written is visible")
            #expect(try await storage.list(prefix: "").map(\.name) == ["data/00/obj"])
        }
    }

    @Test("a read-only file system gives accessDenied", .enabled(if: SmallFileSystem.available, "needs root on Linux to mount a tmpfs"))
    func readOnly() async throws {
        try await withTemporaryFolder { base in
            let fs = try SmallFileSystem(at: base + "/ro", size: "1m", readOnly: true)
            defer { fs.unmount() }
            let storage = try LocalStorage(root: fs.path)
            do {
                try await storage.put("config", data: Data([1]))
                Issue.record("writing to a read-only file system succeeded")
            } catch let error as StorageError {
                #expect(error.code == .accessDenied, "got \(error.code): \(error.message)")
            }
        }
    }
}

/// A size-limited tmpfs mounted for one test.
struct SmallFileSystem {
    let path: String

    static var available: Bool {
        #if os(Linux)
        return getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/bin/mount")
        #else
        return false
        #endif
    }

    init(at path: String, size: String, readOnly: Bool = false) throws {
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        let status = try run("/bin/mount", ["-t", "tmpfs", "-o", "size=\(size),mode=0700\(readOnly ? ",ro" : "")", "tmpfs", path])
        guard status == 0 else { throw CocoaError(.fileWriteUnknown) }
        self.path = path
    }

    func unmount() { _ = try? run("/bin/umount", [path]) }
}

@discardableResult
func run(_ executable: String, _ arguments: [String], environment: [String: String]? = nil) throws -> Int32 {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = arguments
    if let environment { p.environment = environment }
    p.standardOutput = FileHandle.nullDevice
    p.standardError = FileHandle.nullDevice
    try p.run()
    p.waitUntilExit()
    return p.terminationStatus
}
