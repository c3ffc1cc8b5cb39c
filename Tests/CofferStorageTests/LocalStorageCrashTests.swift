import CofferStorage
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Real crashes: a child process (this test binary, re-run in writer mode) puts objects into a
/// LocalStorage as fast as it can and is killed with SIGKILL at a random moment, five times over.
/// After each kill every listed object must be whole (its self-describing content checks out) and
/// every replaced object must hold one complete version. SIGKILL does not lose the page cache, so
/// this proves atomic visibility (temp file + rename), not power-loss durability (the fsyncs).
@Suite("LocalStorage crash safety")
struct LocalStorageCrashTests {
    static let rootVariable = "COFFER_CRASH_WRITER_ROOT"

    @Test("objects are whole or absent after kill -9 of a writer",
          .enabled(if: isLinux, "re-runs the test binary via /proc/self/exe, which only Linux has"))
    func killDashNine() async throws {
        try await withTemporaryFolder { root in
            let exe = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
            var seenObjects = 0
            for round in 0..<5 {
                let p = Process()
                p.executableURL = URL(fileURLWithPath: exe)
                p.arguments = ["--testing-library", "swift-testing", "--filter", "crashWriter"]
                var env = ProcessInfo.processInfo.environment
                env[Self.rootVariable] = root
                p.environment = env
                p.standardOutput = FileHandle.nullDevice
                p.standardError = FileHandle.nullDevice
                try p.run()
                // Let it get going (process start-up included), then kill it mid-write.
                try await Task.sleep(for: .milliseconds(Int.random(in: 600...1200)))
                kill(p.processIdentifier, SIGKILL)
                p.waitUntilExit()
                #expect(p.terminationReason == .uncaughtSignal, "round \(round): the writer was killed, not finished")

                let storage = try LocalStorage(root: root)
                let objects = try await storage.list(prefix: "")
                for info in objects {
                    let data = try await storage.get(info.name)
                    #expect(data.count == info.size)
                    #expect(Self.isWhole(data), "round \(round): \(info.name) is whole (\(data.count) bytes)")
                }
                seenObjects = objects.count
            }
            #expect(seenObjects > 5, "the writer got real work done before being killed (\(seenObjects) objects)")
            let storage = try LocalStorage(root: root)
            let removed = try storage.removeTemporaryFiles()
            let leftovers = try await storage.list(prefix: "").count
            #expect(leftovers == seenObjects, "cleaning temporary files (\(removed)) touches no object")
        }
    }

    /// The child: writes until killed. Enabled only when the crash test starts it.
    @Test("crash test writer (runs only as the crash test's child process)",
          .enabled(if: ProcessInfo.processInfo.environment[rootVariable] != nil, "runs only as the crash test's child process"))
    func crashWriter() async throws {
        let root = ProcessInfo.processInfo.environment[Self.rootVariable]!
        let storage = try LocalStorage(root: root)
        var i = 0
        while true {
            let size = Int.random(in: 1...(2 << 20))
            try await storage.put(String(format: "data/%02x/obj%08d-%d", i % 64, i, getpid()), data: Self.content(seed: i, size: size))
            // One name rewritten over and over: a crash mid-replace must leave one whole version.
            try await storage.put("index/replaced", data: Self.content(seed: i &+ 7, size: Int.random(in: 1...(1 << 20))))
            i += 1
        }
    }

    /// Self-describing content: 8 bytes of length, 8 bytes of seed, then a pattern from the seed.
    static func content(seed: Int, size: Int) -> Data {
        var d = Data(count: max(size, 16))
        d.withUnsafeMutableBytes { buf in
            buf.storeBytes(of: UInt64(buf.count).littleEndian, toByteOffset: 0, as: UInt64.self)
            buf.storeBytes(of: UInt64(seed).littleEndian, toByteOffset: 8, as: UInt64.self)
            for j in 16..<buf.count { buf[j] = UInt8(truncatingIfNeeded: seed &* 31 &+ j &* 7) }
        }
        return d
    }

    static func isWhole(_ d: Data) -> Bool {
        guard d.count >= 16 else { return false }
        let length = d.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 0, as: UInt64.self).littleEndian }
        let seed = d.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self).littleEndian }
        return Int(length) == d.count && content(seed: Int(seed), size: d.count) == d
    }
}

#if os(Linux)
let isLinux = true
#else
let isLinux = false
#endif
