#if canImport(Testing)
import CofferStorage
import Foundation
import Testing
import Crypto

/// The behaviour every ``Storage`` backend must show, written once and run against each backend
/// (LocalStorage, S3Storage on moto and through a faulty proxy, WebDAV servers, ``MemoryStorage``),
/// and against yours: call it from a Swift Testing test with an empty storage.
///
/// ```swift
/// @Test func myBackendConforms() async throws {
///     let storage = try await MyStorage.connect(emptyTestBucket)
///     try await StorageConformance(storage: storage).runAll()
/// }
/// ```
///
/// Modelled on the idea of restic's backend test suite: one list of properties, many backends.
/// The storage handed in must be empty. Failures are reported with `#expect` plus the name of the
/// check, so one broken property does not hide the others.
public struct StorageConformance: Sendable {
    public let storage: any Storage
    /// Size of the "large object" check: above the S3 multipart threshold in use.
    public var largeSize = 12 << 20
    /// Objects in the "many objects" check: above 1000 to force S3 listing pagination.
    public var manyCount = 1100
    /// Parallelism used by the checks that write many objects.
    public var parallelism = 16
    /// Whether racing creates must have exactly one winner. False for servers known not to decide
    /// them atomically (WebDAV's Apache mod_dav_fs and WsgiDAV `MOVE`; moto's `If-None-Match`):
    /// there at least one must win, and the object must hold one writer's bytes whole.
    public var atomicCreate = true

    public init(storage: any Storage) {
        self.storage = storage
    }

    /// Every check.
    public func runAll() async throws {
        try await emptyAtStart()
        try await roundTrip()
        try await emptyObject()
        try await ranges()
        try await notFound()
        try await replace()
        try await deleteIsIdempotent()
        try await invalidNamesRejected()
        try await listWithPrefixes()
        try await readAfterWrite()
        try await concurrentPuts()
        try await conditionalCreate()
        try await largeObject()
        try await manyObjects()
    }

    /// The checks that matter when the network misbehaves (run through a fault proxy).
    public func runCore() async throws {
        try await roundTrip()
        try await ranges()
        try await notFound()
        try await replace()
        try await deleteIsIdempotent()
        try await listWithPrefixes()
        try await concurrentPuts()
        try await largeObject()
    }

    // MARK: Checks

    public func emptyAtStart() async throws {
        let all = try await storage.list(prefix: "")
        #expect(all.isEmpty, "a fresh storage lists nothing, got \(all.map(\.name))")
    }

    public func roundTrip() async throws {
        let data = Self.randomData(4321)
        try await storage.put("config", data: data)
        #expect(try await storage.get("config") == data, "get returns what put stored")
        let info = try await storage.stat("config")
        #expect(info?.name == "config")
        #expect(info?.size == data.count)
        if let modified = info?.modified {
            #expect(abs(modified.timeIntervalSinceNow) < 3600, "modification time is the storage's clock, near now: \(modified)")
        }
        let listed = try await storage.list(prefix: "config")
        #expect(listed.map(\.name) == ["config"])
        #expect(listed.first?.size == data.count)
        try await storage.delete("config")
    }

    public func emptyObject() async throws {
        try await storage.put("keys/empty", data: Data())
        #expect(try await storage.get("keys/empty") == Data())
        #expect(try await storage.get("keys/empty", range: 0..<0) == Data())
        #expect(try await storage.stat("keys/empty")?.size == 0)
        #expect(try await storage.list(prefix: "keys/").map(\.size) == [0])
        await expectCode(.rangeNotSatisfiable, "range past the end of an empty object") {
            _ = try await storage.get("keys/empty", range: 0..<1)
        }
        try await storage.delete("keys/empty")
    }

    public func ranges() async throws {
        let name = "data/ab/abcdef0123456789"
        let data = Self.randomData(1000)
        try await storage.put(name, data: data)
        for range in [0..<10, 0..<1, 500..<600, 990..<1000, 999..<1000, 0..<1000, 1000..<1000, 17..<17] {
            let got = try await storage.get(name, range: range)
            #expect(got == data[range], "range \(range) returns exactly those bytes (got \(got.count))")
        }
        for range in [995..<1005, 1000..<1001, 2000..<2100, 1001..<1001, 0..<1001] {
            await expectCode(.rangeNotSatisfiable, "range \(range) of a 1000-byte object") {
                _ = try await storage.get(name, range: range)
            }
        }
        try await storage.delete(name)
    }

    public func notFound() async throws {
        await expectCode(.notFound, "get of a missing object") { _ = try await storage.get("data/00/missing") }
        await expectCode(.notFound, "ranged get of a missing object") { _ = try await storage.get("data/00/missing", range: 0..<4) }
        await expectCode(.notFound, "empty ranged get of a missing object") { _ = try await storage.get("data/00/missing", range: 0..<0) }
        #expect(try await storage.stat("data/00/missing") == nil)
        #expect(try await storage.stat("nosuchdir/missing") == nil)
        #expect(try await storage.list(prefix: "nosuchdir/").isEmpty)
    }

    public func replace() async throws {
        let a = Self.randomData(3000), b = Self.randomData(17)
        try await storage.put("index/replace", data: a)
        try await storage.put("index/replace", data: b)
        #expect(try await storage.get("index/replace") == b, "a second put replaces the object whole")
        #expect(try await storage.stat("index/replace")?.size == b.count)
        try await storage.put("index/replace", data: b)  // a retried identical upload succeeds
        #expect(try await storage.list(prefix: "index/").map(\.name) == ["index/replace"])
        try await storage.delete("index/replace")
    }

    public func deleteIsIdempotent() async throws {
        try await storage.put("snapshots/one", data: Self.randomData(10))
        try await storage.delete("snapshots/one")
        #expect(try await storage.stat("snapshots/one") == nil)
        await expectCode(.notFound, "get after delete") { _ = try await storage.get("snapshots/one") }
        try await storage.delete("snapshots/one")
        try await storage.delete("snapshots/never-was")

        for i in 0..<3 { try await storage.put("snapshots/b\(i)", data: Self.randomData(5)) }
        try await storage.delete(["snapshots/b0", "snapshots/b1", "snapshots/b2", "snapshots/b9"])
        #expect(try await storage.list(prefix: "snapshots/").isEmpty, "batch delete removes every listed object, missing ones included")
        try await storage.delete([])
    }

    public func invalidNamesRejected() async throws {
        let bad = ["", "/config", "config/", "data//x", "../x", "data/../x", "./x", ".", "..", "Config",
                   "a b", "a\\b", "data/%2e%2e", "é", "x\u{0}y", "tmp~1", String(repeating: "a", count: 513)]
        for name in bad {
            await expectCode(.invalidName, "put \(name.debugDescription)") { try await storage.put(name, data: Data([1])) }
            await expectCode(.invalidName, "get \(name.debugDescription)") { _ = try await storage.get(name) }
            await expectCode(.invalidName, "stat \(name.debugDescription)") { _ = try await storage.stat(name) }
            await expectCode(.invalidName, "delete \(name.debugDescription)") { try await storage.delete(name) }
            await expectCode(.invalidName, "create \(name.debugDescription)") { try await storage.create(name, data: Data([1])) }
        }
        #expect(try await storage.list(prefix: "").isEmpty, "rejected names wrote nothing")
    }

    public func listWithPrefixes() async throws {
        let names = ["data/00/0011", "data/00/0022", "data/01/0133", "datab", "database/x", "index/i1", "keys/k1", "config"]
        var sizes: [String: Int] = [:]
        for (i, name) in names.enumerated() {
            let d = Self.randomData(i * 7 + 1)
            sizes[name] = d.count
            try await storage.put(name, data: d)
        }
        func listed(_ p: String) async throws -> [String] { try await storage.list(prefix: p).map(\.name).sorted() }
        #expect(try await listed("") == names.sorted())
        #expect(try await listed("data/") == ["data/00/0011", "data/00/0022", "data/01/0133"])
        #expect(try await listed("data/00/") == ["data/00/0011", "data/00/0022"])
        #expect(try await listed("data/0") == ["data/00/0011", "data/00/0022", "data/01/0133"])
        #expect(try await listed("data/00/001") == ["data/00/0011"])
        #expect(try await listed("data") == ["data/00/0011", "data/00/0022", "data/01/0133", "database/x", "datab"].sorted())
        #expect(try await listed("datab") == ["database/x", "datab"].sorted())
        #expect(try await listed("index/") == ["index/i1"])
        #expect(try await listed("nothing/") == [])
        for info in try await storage.list(prefix: "") {
            #expect(info.size == sizes[info.name], "listing reports the size of \(info.name)")
        }
        try await storage.delete(names)
        #expect(try await storage.list(prefix: "").isEmpty)
    }

    public func readAfterWrite() async throws {
        for i in 0..<20 {
            let name = "locks/raw\(i)"
            let data = Self.randomData(i * 31)
            try await storage.put(name, data: data)
            #expect(try await storage.stat(name)?.size == data.count, "stat sees \(name) right after put")
            #expect(try await storage.get(name) == data, "get sees \(name) right after put")
            #expect(try await storage.list(prefix: name).map(\.name) == [name], "list sees \(name) right after put")
        }
        try await storage.delete((0..<20).map { "locks/raw\($0)" })
    }

    public func concurrentPuts() async throws {
        let storage = self.storage
        let distinct = (0..<32).map { ("data/cc/obj\($0)", Self.randomData(1000 + $0 * 100)) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (name, data) in distinct { group.addTask { try await storage.put(name, data: data) } }
            try await group.waitForAll()
        }
        for (name, data) in distinct {
            #expect(try await storage.get(name) == data, "concurrent put of \(name) stored its own bytes")
        }
        // Racing writers on one name: the result is one of them, whole.
        let contenders = (0..<8).map { Self.randomData(5000 + $0 * 1000) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for data in contenders { group.addTask { try await storage.put("data/cc/same", data: data) } }
            try await group.waitForAll()
        }
        let winner = try await storage.get("data/cc/same")
        #expect(contenders.contains(winner), "racing puts leave exactly one writer's bytes (got \(winner.count) bytes)")
        try await storage.delete(distinct.map(\.0) + ["data/cc/same"])
    }

    public func conditionalCreate() async throws {
        let store = self.storage
        let a = Self.randomData(100), b = Self.randomData(200)
        try await store.create("heads/h1", data: a)
        await expectCode(.alreadyExists, "create over an existing object") { try await store.create("heads/h1", data: b) }
        try await store.create("heads/h1", data: a)  // a retried create of the same bytes succeeds
        #expect(try await store.get("heads/h1") == a, "a failed create leaves the first object intact")
        // Racing creators with different bytes: exactly one wins.
        let contenders = (0..<6).map { Self.randomData(300 + $0) }
        let wins = await Self.raceCreates(store, name: "heads/race", contenders: contenders)
        if atomicCreate {
            #expect(wins == 1, "exactly one of racing creates wins, got \(wins)")
        } else {
            #expect(wins >= 1, "at least one of racing creates wins, got \(wins)")
        }
        #expect(contenders.contains(try await store.get("heads/race")))
        // With the digest known (the engine's packs): stored byte for byte, still conditional.
        let c = Self.randomData(5000)
        let digest = Array(SHA256.hash(data: c))
        try await store.create("heads/h2", data: c, sha256: digest)
        #expect(try await store.get("heads/h2") == c, "create with a known digest stores the bytes")
        await expectCode(.alreadyExists, "create with a known digest over an existing object") {
            try await store.create("heads/h2", data: b, sha256: Array(SHA256.hash(data: b)))
        }
        try await store.delete(["heads/h1", "heads/h2", "heads/race"])
    }

    /// Starts `contenders.count` creates of `name` at once; returns how many succeeded.
    public static func raceCreates(_ store: any Storage, name: String, contenders: [Data]) async -> Int {
        await withTaskGroup(of: Bool.self) { group in
            for data in contenders {
                group.addTask {
                    do {
                        try await store.create(name, data: data)
                        return true
                    } catch {
                        return false
                    }
                }
            }
            var n = 0
            for await won in group {
                if won { n += 1 }
            }
            return n
        }
    }

    public func largeObject() async throws {
        let data = Self.randomData(largeSize)
        try await storage.put("data/ff/large", data: data)
        #expect(try await storage.stat("data/ff/large")?.size == data.count)
        let got = try await storage.get("data/ff/large")
        #expect(got.count == data.count)
        #expect(got == data, "a large (multipart on S3) object round-trips byte for byte")
        let boundary = 5 << 20
        let r = (boundary - 100)..<(boundary + 100)
        #expect(try await storage.get("data/ff/large", range: r) == data[r], "a range across a part boundary")
        let tail = (data.count - 10)..<data.count
        #expect(try await storage.get("data/ff/large", range: tail) == data[tail])
        try await storage.delete("data/ff/large")
    }

    public func manyObjects() async throws {
        let storage = self.storage
        let names = (0..<manyCount).map { String(format: "data/%02x/many%05d", $0 % 256, $0) }
        let parallelism = self.parallelism
        try await withThrowingTaskGroup(of: Void.self) { group in
            var next = 0
            for _ in 0..<min(parallelism, names.count) {
                let name = names[next]; next += 1
                group.addTask { try await storage.put(name, data: Data(name.utf8)) }
            }
            while try await group.next() != nil {
                if next < names.count {
                    let name = names[next]; next += 1
                    group.addTask { try await storage.put(name, data: Data(name.utf8)) }
                }
            }
        }
        let listed = try await storage.list(prefix: "data/")
        #expect(listed.count == names.count, "all \(names.count) objects listed (pagination), got \(listed.count)")
        #expect(Set(listed.map(\.name)) == Set(names))
        #expect(listed.allSatisfy { $0.size == $0.name.utf8.count })
        #expect(try await storage.list(prefix: "data/0a/").count == names.filter { $0.hasPrefix("data/0a/") }.count)
        try await storage.delete(names)
        #expect(try await storage.list(prefix: "").isEmpty, "batch delete of \(names.count) objects")
    }

    // MARK: Helpers

    public func expectCode(_ code: StorageError.Code, _ what: String, sourceLocation: SourceLocation = #_sourceLocation,
                    _ body: () async throws -> Void) async {
        do {
            try await body()
            Issue.record("\(what): expected \(code), but it succeeded", sourceLocation: sourceLocation)
        } catch let error as StorageError {
            #expect(error.code == code, "\(what): expected \(code), got \(error.code): \(error.message)", sourceLocation: sourceLocation)
        } catch {
            Issue.record("\(what): expected StorageError \(code), got \(error)", sourceLocation: sourceLocation)
        }
    }
}

extension StorageConformance {
    /// `count` random bytes (incompressible, different every call).
    public static func randomData(_ count: Int) -> Data {
        var g = SystemRandomNumberGenerator()
        var d = Data(count: count)
        d.withUnsafeMutableBytes { buf in
            var i = 0
            while i + 8 <= buf.count {
                buf.storeBytes(of: g.next() as UInt64, toByteOffset: i, as: UInt64.self)
                i += 8
            }
            while i < buf.count { buf[i] = UInt8.random(in: 0...255, using: &g); i += 1 }
        }
        return d
    }
}
#endif
