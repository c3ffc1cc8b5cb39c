@testable import CofferStorage
import Foundation
import Testing

/// What iCloud Drive leaves in a repository folder, made by hand: placeholders `.NAME.icloud` for
/// objects not downloaded to this device (a property list giving the size, as iCloud writes them)
/// and conflict copies `NAME 2`. On Linux a placeholder can only have been copied from an Apple
/// device, so reading one is a clear error naming the file; the download path runs on Apple only.
@Suite("LocalStorage in iCloud Drive: placeholders and conflict copies")
struct ICloudFolderTests {
    /// An iCloud Drive placeholder for `name` (a file in `folder`) of `size` bytes.
    static func writePlaceholder(_ folder: String, _ name: String, size: Int) throws {
        let properties: [String: Any] = ["NSURLNameKey": name, "NSURLFileSizeKey": size, "NSURLFileResourceTypeKey": "NSURLFileResourceTypeRegular"]
        let data = try PropertyListSerialization.data(fromPropertyList: properties, format: .binary, options: 0)
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try data.write(to: URL(fileURLWithPath: "\(folder)/.\(name).icloud"))
    }

    @Test("a placeholder is the object, present but not downloaded: listed and stat-ed under its own name, read gives a clear error")
    func placeholders() async throws {
        try await withTemporaryFolder { root in
            let storage = try LocalStorage(root: root)
            let here = randomData(300)
            try await storage.put("data/3f/3f01", data: here)
            try Self.writePlaceholder("\(root)/data/3f", "3f02", size: 123_456)
            try Self.writePlaceholder(root, "config", size: 77)
            // A placeholder beside its downloaded file (iCloud replaces one with the other): one object.
            try Self.writePlaceholder("\(root)/data/3f", "3f01", size: 300)

            let listed = try await storage.list(prefix: "").sorted { $0.name < $1.name }
            #expect(listed.map(\.name) == ["config", "data/3f/3f01", "data/3f/3f02"])
            #expect(listed.map(\.size) == [77, 300, 123_456], "sizes come from the placeholders")
            #expect(try await storage.list(prefix: "data/3f/3f02").map(\.name) == ["data/3f/3f02"])
            #expect(try await storage.list(prefix: "index/").isEmpty)
            let info = try #require(try await storage.stat("data/3f/3f02"))
            #expect(info.size == 123_456)
            #expect(try await storage.stat("data/3f/3f03") == nil)
            #expect(try await storage.get("data/3f/3f01") == here, "a downloaded object reads as always")

            #if !canImport(Darwin)
            for name in ["data/3f/3f02", "config"] {
                do {
                    _ = try await storage.get(name, range: 0..<10)
                    Issue.record("reading a placeholder succeeded")
                } catch let error as StorageError {
                    #expect(error.code == .permanent, "\(error)")
                    #expect(error.message.contains("iCloud Drive placeholder") && error.message.contains(".\(name.split(separator: "/").last!).icloud"), "\(error.message)")
                    #expect(error.message.contains(root), "names the file: \(error.message)")
                }
            }
            // A create over a name iCloud holds must compare bytes it cannot read here: it says so
            // rather than writing a second copy that iCloud would turn into a conflict.
            do {
                try await storage.create("data/3f/3f02", data: randomData(10))
                Issue.record("a create over a placeholder succeeded")
            } catch let error as StorageError {
                #expect(error.message.contains("iCloud Drive placeholder"), "\(error.message)")
            }
            #expect(!FileManager.default.fileExists(atPath: "\(root)/data/3f/3f02"), "nothing was written over the placeholder")
            #endif

            // Deleting an object that is not downloaded removes its placeholder (iCloud then removes it everywhere).
            try await storage.delete("data/3f/3f02")
            #expect(!FileManager.default.fileExists(atPath: "\(root)/data/3f/.3f02.icloud"))
            #expect(try await storage.stat("data/3f/3f02") == nil)
            try await storage.delete("data/3f/3f02")
            #expect(try storage.temporaryFiles().isEmpty)
        }
    }

    @Test("conflict copies (`NAME 2`, `.NAME 3.icloud`) are never objects and are reported")
    func conflictCopies() async throws {
        try await withTemporaryFolder { root in
            let storage = try LocalStorage(root: root)
            let original = randomData(500)
            try await storage.put("data/ab/ab01", data: original)
            try await storage.put("config", data: Data("cfg".utf8))
            try randomData(500).write(to: URL(fileURLWithPath: "\(root)/data/ab/ab01 2"))
            try Data("other".utf8).write(to: URL(fileURLWithPath: "\(root)/config 2"))
            try Self.writePlaceholder("\(root)/data/ab", "ab01 3", size: 500)
            // Not conflict copies: foreign files and names whose base is not an object name.
            try Data().write(to: URL(fileURLWithPath: "\(root)/data/ab/Notes 2"))
            try Data().write(to: URL(fileURLWithPath: "\(root)/data/ab/ab01 copy"))

            #expect(try await storage.list(prefix: "").map(\.name).sorted() == ["config", "data/ab/ab01"])
            #expect(try await storage.get("data/ab/ab01") == original, "the original name is authoritative")
            #expect(try storage.conflictCopies() == ["config 2", "data/ab/.ab01 3.icloud", "data/ab/ab01 2"])
            #expect(LocalStorage.conflictOriginal("3fa1 12") == "3fa1")
            #expect(LocalStorage.conflictOriginal(".3fa1 2.icloud") == "3fa1")
            #expect(LocalStorage.conflictOriginal("3fa1 2x") == nil)
            #expect(LocalStorage.conflictOriginal("3fa1 ") == nil)
            #expect(LocalStorage.conflictOriginal("3fa1") == nil)
        }
    }

    @Test("placeholder property lists: the size is read; anything else gives no size, never a trap")
    func placeholderParsing() throws {
        let good = try PropertyListSerialization.data(fromPropertyList: ["NSURLFileSizeKey": 4096, "NSURLNameKey": "x"], format: .binary, options: 0)
        #expect(LocalStorage.placeholderSize(good) == 4096)
        let xml = try PropertyListSerialization.data(fromPropertyList: ["NSURLFileSizeKey": 12], format: .xml, options: 0)
        #expect(LocalStorage.placeholderSize(xml) == 12)
        #expect(LocalStorage.placeholderSize(Data("garbage".utf8)) == nil)
        #expect(LocalStorage.placeholderSize(Data()) == nil)
        #expect(LocalStorage.placeholderObject(".3fa1.icloud") == "3fa1")
        #expect(LocalStorage.placeholderObject(".icloud") == nil)
        #expect(LocalStorage.placeholderObject("3fa1.icloud") == nil)
    }
}
