@_spi(Testing) import CofferStorage
import Foundation
import Synchronization
import Testing

/// A prune removes temporary files older than its grace period; a writer suspended mid-write finds its
/// own removed when it resumes. The write is made again from the bytes it still holds.
@Suite("LocalStorage: a temporary file removed before its rename")
struct VanishedTemporaryTests {
    @Test("create and put write again when their temporary file vanished; a third loss is a clear transient error")
    func writesAgain() async throws {
        try await withTemporaryFolder { root in
            let storage = try LocalStorage(root: root)
            let removed = Mutex(0)
            let budget = Mutex(1)
            LocalStorage.beforeFinalName.withLock { hook in
                hook = { tmp in
                    guard tmp.hasPrefix(root + "/") else { return }   // other tests' folders are not ours
                    let go = budget.withLock { b -> Bool in
                        if b > 0 { b -= 1; return true }
                        return false
                    }
                    if go, unlink(tmp) == 0 { removed.withLock { $0 += 1 } }
                }
            }
            defer { LocalStorage.beforeFinalName.withLock { $0 = nil } }

            let bytes = Data((0..<5000).map { UInt8(truncatingIfNeeded: $0 &* 7) })
            let name = "data/ab/ab" + String(repeating: "1", count: 62)
            try await storage.create(name, data: bytes)
            #expect(removed.withLock { $0 } == 1, "the hook must have removed the first temporary file")
            #expect(try await storage.get(name) == bytes)

            budget.withLock { $0 = 1 }
            try await storage.put("config", data: bytes)
            #expect(removed.withLock { $0 } == 2)
            #expect(try await storage.get("config") == bytes)
            #expect(try storage.temporaryFiles().isEmpty)

            // Every attempt loses its file: the write fails, names the object, and leaves nothing.
            budget.withLock { $0 = 3 }
            let other = "data/cd/cd" + String(repeating: "2", count: 62)
            do {
                try await storage.create(other, data: bytes)
                Issue.record("a write whose temporary file always vanished succeeded")
            } catch let error as StorageError {
                #expect(error.code == .transient && error.message.contains(other), "\(error)")
            }
            #expect(removed.withLock { $0 } == 5)
            #expect(try await storage.stat(other) == nil)
            #expect(try storage.temporaryFiles().isEmpty)
        }
    }
}
