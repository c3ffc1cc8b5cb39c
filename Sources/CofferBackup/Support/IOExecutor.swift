import Foundation
import Synchronization

/// A task executor with threads of its own, for work that makes blocking system calls (reading and
/// writing files, the folder backend's I/O): a restore runs on it, so the cooperative thread pool
/// (two threads on a 2-core phone or server) is never held by a `pwrite` and the app's other tasks
/// keep running. Tasks started with `Task(executorPreference: IOExecutor.shared)` (and their child
/// tasks) run here; awaiting another actor hops there and back.
final class IOExecutor: TaskExecutor {
    static let shared = IOExecutor(threads: max(4, 2 * ProcessInfo.processInfo.activeProcessorCount))

    private let jobs = Mutex<[UnownedJob]>([])
    private let available = DispatchSemaphore(value: 0)
    /// Jobs run so far (tests check that work really ran here).
    let jobsRun = Atomic<Int>(0)

    private static let threadNamePrefix = "coffer-io-"

    private init(threads: Int) {
        for i in 0..<threads {
            let t = Thread { [unowned self] in self.serve() }
            t.name = Self.threadNamePrefix + String(i)
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
        Thread.current.threadDictionary[Self.marker] = true
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
    private static let marker = "coffer.io-executor"
}
