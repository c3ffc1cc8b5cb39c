import Foundation
import Testing
@testable import CofferCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The package's one atomic file writer: exact permissions whatever the umask, whole content or
/// the old one, no temporary left behind, errors that name the path and never the content.
@Suite struct PrivateFileTests {
    static func mode(_ url: URL) -> mode_t {
        var st = stat()
        _ = stat(url.path, &st)
        return st.st_mode & 0o777
    }

    // (The umask is left alone: it is process-wide, and other suites create files in parallel.)
    @Test("0600 by default and the given mode exactly; the folder it makes is private")
    func permissions() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("privatefile-\(UUID().uuidString)/sub")
        defer { try? FileManager.default.removeItem(at: dir.deletingLastPathComponent()) }
        let key = dir.appendingPathComponent("device.key")
        try PrivateFile.save(Data("secret".utf8), to: key)
        #expect(Self.mode(key) == 0o600)
        #expect(Self.mode(dir) & 0o077 == 0, "the folder it made is private")
        let config = dir.appendingPathComponent("realm.json")
        try PrivateFile.save(Data("{}".utf8), to: config, mode: 0o644)
        #expect(Self.mode(config) == 0o644)
        // Replacing keeps the mode and leaves no temporary file.
        try PrivateFile.save(Data("newer".utf8), to: key)
        #expect(try Data(contentsOf: key) == Data("newer".utf8))
        #expect(Self.mode(key) == 0o600)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted() == ["device.key", "realm.json"])
    }

    @Test("a target it cannot write (its folder is a file): the error names the path, never the content; nothing is changed")
    func failureNamesThePath() throws {
        // A file where the folder should be fails for every user, root included (CI runs as root).
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("privatefile-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: base) }
        try FileManager.default.createDirectory(at: base, withIntermediateDirectories: true)
        let notAFolder = base.appendingPathComponent("plain")
        try Data("x".utf8).write(to: notAFolder)
        let target = notAFolder.appendingPathComponent("key")
        #expect {
            try PrivateFile.save(Data("topsecret".utf8), to: target)
        } throws: { error in
            guard let e = error as? PrivateFileError else { return false }
            return e.path == target.path && !e.description.contains("topsecret")
        }
        #expect(try Data(contentsOf: notAFolder) == Data("x".utf8))
        #expect(try FileManager.default.contentsOfDirectory(atPath: base.path) == ["plain"])
    }
}
