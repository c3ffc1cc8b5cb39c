import Foundation
import Synchronization
import Testing
@testable import CofferBackup

/// A restore's blocking file writes run on the I/O executor's threads, never on the cooperative
/// pool (two threads on a 2-core machine, shared with the app's other tasks).
@Suite struct IOExecutorTests {
    @Test("every blob a restore writes is written on the I/O executor, beside a task on the cooperative pool")
    func restoreWritesOffThePool() async throws {
        let s = Scratch()
        let (t, src) = try await Self.twelveFiles(s)
        let summary: BackupSummary = try await t.repo.backup(paths: [src])

        let offBefore = Engine.writesOffIOExecutor.load(ordering: .relaxed)
        let jobsBefore = IOExecutor.restore.jobsRun.load(ordering: .relaxed)
        // A task on the cooperative pool, running beside the restore (started before it, so the
        // count below does not depend on how fast the restore is).
        let ticks = Counter()
        let (firstTick, tickSeen) = AsyncStream<Void>.makeStream()
        let ticker = Task {
            while !Task.isCancelled {
                ticks.bump()
                tickSeen.yield()
                try? await Task.sleep(for: .milliseconds(1))
            }
        }
        for await _ in firstTick { break }
        let r: RestoreSummary = try await t.repo.restore(snapshot: summary.snapshotID, target: URL(fileURLWithPath: s.path("out")))
        ticker.cancel()
        #expect(r.isComplete && r.filesRestored == 12)
        expectSameTree(src, s.path("out/data"))
        #expect(IOExecutor.restore.jobsRun.load(ordering: .relaxed) > jobsBefore, "the restore ran on its I/O executor")
        #expect(Engine.writesOffIOExecutor.load(ordering: .relaxed) == offBefore, "a blob was written on a thread of the cooperative pool")
        #expect(ticks.value > 0)
    }

    @Test("a backup reads every file on the I/O executor and makes every pack buffer on its own thread")
    func backupReadsOffThePool() async throws {
        let s = Scratch()
        let (t, src) = try await Self.twelveFiles(s)
        let readsOff = Engine.readsOffIOExecutor.load(ordering: .relaxed)
        let madeOff = PackWriterFactory.madeElsewhere.load(ordering: .relaxed)
        let made = PackWriterFactory.made.load(ordering: .relaxed)
        let jobsBefore = IOExecutor.shared.jobsRun.load(ordering: .relaxed)
        let summary: BackupSummary = try await t.repo.backup(paths: [src])
        #expect(summary.packsWritten >= 4, "the 8.4 MB of data fill several packs")
        #expect(IOExecutor.shared.jobsRun.load(ordering: .relaxed) > jobsBefore, "the backup ran on the I/O executor")
        #expect(Engine.readsOffIOExecutor.load(ordering: .relaxed) == readsOff, "a file was read on a thread of the cooperative pool")
        #expect(PackWriterFactory.made.load(ordering: .relaxed) >= made + summary.packsWritten, "every pack came from the factory")
        #expect(PackWriterFactory.madeElsewhere.load(ordering: .relaxed) == madeOff, "a pack buffer was made off its thread")
        let r: RestoreSummary = try await t.repo.restore(snapshot: summary.snapshotID, target: URL(fileURLWithPath: s.path("out")))
        #expect(r.isComplete)
        expectSameTree(src, s.path("out/data"))
    }

    /// A repository of 1 MiB packs and 256 KiB chunks, and a folder of twelve 700 KB files to back up.
    static func twelveFiles(_ s: Scratch) async throws -> (TestRepo, String) {
        let t = try await TestRepo.make(s, options: RepositoryOptions(fileChunkSize: 256 << 10, targetPackSize: 1 << 20, padding: .none))
        let src = s.path("src/data")
        for i in 0..<12 { write(randomBytes(700_000, seed: UInt64(i + 1)), to: src + "/f\(i).bin") }
        return (t, src)
    }

    final class Counter: Sendable {
        private let n = Mutex(0)
        func bump() { n.withLock { $0 += 1 } }
        var value: Int { n.withLock { $0 } }
    }
}
