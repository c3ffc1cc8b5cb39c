import Foundation
import Synchronization

/// A task executor with threads of its own, for work that makes blocking system calls (reading and
/// writing files, the folder backend's I/O): a restore runs on it, so the cooperative thread pool
/// (two threads on a 2-core phone or server) is never held by a `pwrite` and the app's other tasks
/// keep running. Tasks started with `Task(executorPreference: IOExecutor.shared)` (and their child
/// tasks) run here; awaiting another actor hops there and back.
///
/// A backup's workers run here too (reading files, hashing, compressing, sealing), in a task group;
/// they never block waiting for each other or for an upload (they suspend), so the threads are
/// held only by system calls and CPU work.
final class IOExecutor: TaskExecutor {
    /// Enough threads that a backup's workers (one per core) never wait for one while its upload
    /// tasks (3 by default) sit in a folder's write and fsync, with room for a restore beside it.
    static let shared = IOExecutor(threads: min(64, max(8, 4 * ProcessInfo.processInfo.activeProcessorCount)))
    /// A restore's threads, one per core (at least two): a restore's tasks only read, decrypt and
    /// write. On the eight threads of ``shared`` a restore's 1 MiB buffers per blob came from fresh
    /// pages (72-103k page faults, against 8 500 here, even with fewer packs at once), and its peak
    /// RSS was 11-16 MiB above the cooperative pool's (BENCHMARKS.md, session 12).
    static let restore = IOExecutor(threads: max(2, ProcessInfo.processInfo.activeProcessorCount), prefix: "coffer-restore-")
    /// One thread on which a backup makes its pack buffers (PackWriterFactory): every 8 MiB buffer
    /// then comes from that thread's glibc malloc arena, which keeps freed blocks for reuse.
    static let packBuffers = IOExecutor(threads: 1, prefix: "coffer-packbuf-", marker: "coffer.packbuf-executor")

    private let jobs = Mutex<[UnownedJob]>([])
    private let available = DispatchSemaphore(value: 0)
    /// Jobs run so far (tests check that work really ran here).
    let jobsRun = Atomic<Int>(0)

    private static let threadNamePrefix = "coffer-io-"

    private let threadMarker: String

    private init(threads: Int, prefix: String = IOExecutor.threadNamePrefix, marker: String = IOExecutor.marker) {
        threadMarker = marker
        for i in 0..<threads {
            let t = Thread { [unowned self] in self.serve() }
            t.name = prefix + String(i)
            t.stackSize = 1 << 20
            t.start()
        }
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let unowned = UnownedJob(job)
        jobs.withLock { $0.append(unowned) }
        available.signal()
    }

    private func serve() {
        Thread.current.threadDictionary[threadMarker] = true
        while true {
            available.wait()
            guard let job = jobs.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) else { continue }
            jobsRun.add(1, ordering: .relaxed)
            job.runSynchronously(on: asUnownedTaskExecutor())
        }
    }

    /// True on one of this executor's threads (marked in their thread dictionary: thread names
    /// are not reliable across platforms).
    static var isCurrentThread: Bool { Thread.current.threadDictionary[marker] != nil }
    /// True on the ``packBuffers`` thread.
    static var isPackBufferThread: Bool { Thread.current.threadDictionary["coffer.packbuf-executor"] != nil }
    private static let marker = "coffer.io-executor"
}
