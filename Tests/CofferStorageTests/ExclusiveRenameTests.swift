@testable import CofferStorage
import Foundation
import Testing

/// The fallback of `LocalStorage.create` on file systems without hard links (FAT, exFAT, some
/// network mounts): an atomic rename that refuses a taken name. Exercised directly here, since
/// the test machine's file systems all have hard links.
@Suite struct ExclusiveRenameTests {
    @Test("renameNoReplace moves to a free name and refuses a taken one, leaving it intact")
    func exclusiveRename() throws {
        let dir = NSTemporaryDirectory() + "coffer-xrename-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let a = dir + "/a", b = dir + "/b", c = dir + "/c"
        try Data("first".utf8).write(to: URL(fileURLWithPath: a))
        try Data("second".utf8).write(to: URL(fileURLWithPath: c))
        #expect(LocalStorage.renameNoReplace(a, b) == 0)
        #expect(!FileManager.default.fileExists(atPath: a))
        #expect(FileManager.default.contents(atPath: b) == Data("first".utf8))
        #expect(LocalStorage.renameNoReplace(c, b) == EEXIST, "a taken name must be refused")
        #expect(FileManager.default.contents(atPath: b) == Data("first".utf8), "the taken name keeps its bytes")
        #expect(FileManager.default.contents(atPath: c) == Data("second".utf8), "the source stays where it was")
    }
}
