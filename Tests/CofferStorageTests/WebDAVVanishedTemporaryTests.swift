import CofferStorage
import CofferTesting
@_spi(Testing) @testable import CofferWebDAV
import Foundation
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A WebDAV server restarted with a cleaned upload folder, or a cleaner removing `*~tmp`, can take
/// a write's temporary away between its upload and its `MOVE`. The write uploads it again from the
/// bytes it still holds instead of failing the backup; the hook removes the temporary on the
/// server's own disk, as such a cleaner would.
@Suite("WebDAVStorage: a temporary removed before its MOVE", .serialized)
struct WebDAVVanishedTemporaryTests {
    /// Servers that read their folder directly (rclone's VFS caches what it saw, so a file removed
    /// behind its back is not what this test is about).
    @Test("create and put upload again when their temporary vanished; a third loss is a clear transient error",
          arguments: [WebDAVServer.Kind.lighttpd, .apache, .wsgidav])
    func uploadsAgain(kind: WebDAVServer.Kind) async throws {
        try await WebDAVServer.with(kind) { server in
            try await withStorage(try server.storage("repo")) { storage in
                let repo = server.served.appendingPathComponent("repo")
                let budget = Mutex(0)
                let removed = Mutex(0)
                let temporaries = Mutex<[String]>([])
                storage.beforeMove.withLock { hook in
                    hook = { temporary in
                        temporaries.withLock { $0.append(temporary) }
                        let go = budget.withLock { b -> Bool in
                            if b > 0 { b -= 1; return true }
                            return false
                        }
                        if go, unlink(repo.appendingPathComponent(temporary).path) == 0 { removed.withLock { $0 += 1 } }
                    }
                }
                func uploads() -> Int { temporaries.withLock { $0.count } }

                let bytes = randomData(5000)
                let name = "data/ab/ab" + String(repeating: "1", count: 62)
                budget.withLock { $0 = 1 }
                try await storage.create(name, data: bytes)
                #expect(removed.withLock { $0 } == 1, "the hook removed the first temporary on the server")
                #expect(uploads() == 2, "one upload lost, one more made: \(temporaries.withLock { $0 })")
                #expect(Set(temporaries.withLock { $0 }).count == 2, "each upload has its own temporary name")
                #expect(try await storage.get(name) == bytes)
                #expect(FileManager.default.contents(atPath: repo.appendingPathComponent(name).path) == bytes)

                // put (Overwrite: T) over an existing object, losing its first temporary.
                let newer = randomData(3333)
                try await storage.put("config", data: randomData(10))
                temporaries.withLock { $0 = [] }
                budget.withLock { $0 = 1 }
                try await storage.put("config", data: newer)
                #expect(uploads() == 2)
                #expect(try await storage.get("config") == newer)

                // A create whose temporary vanished, over a name another writer holds: still taken.
                budget.withLock { $0 = 1 }
                do {
                    try await storage.create(name, data: randomData(5000))
                    Issue.record("a create over another writer's object succeeded")
                } catch let error as StorageError {
                    #expect(error.code == .alreadyExists, "\(error)")
                }
                #expect(try await storage.get(name) == bytes, "the first writer's object is intact")

                // Every attempt loses its temporary: the write fails, names the object, and leaves nothing.
                temporaries.withLock { $0 = [] }
                budget.withLock { $0 = 3 }
                let other = "data/cd/cd" + String(repeating: "2", count: 62)
                do {
                    try await storage.create(other, data: bytes)
                    Issue.record("a write whose temporary always vanished succeeded")
                } catch let error as StorageError {
                    #expect(error.code == .transient && error.message.contains(other), "\(error)")
                    #expect(error.message.contains("vanished 3 times"), "\(error.message)")
                }
                #expect(uploads() == WebDAVStorage.uploadAttempts)
                #expect(try await storage.stat(other) == nil)
                storage.beforeMove.withLock { $0 = nil }
            }
            let leftovers = FileManager.default.enumerator(atPath: server.served.path)?.compactMap { $0 as? String }.filter { $0.hasSuffix("~tmp") } ?? []
            #expect(leftovers.isEmpty, "temporary uploads left on \(kind): \(leftovers)")
        }
    }
}
