import Foundation
import Synchronization
import CofferCore
import CofferStorage
import CofferPosix

/// Makes the workers' pack writers on one thread of its own, so that every pack buffer (8 MiB each,
/// reserved when the writer is made) comes from that thread's glibc malloc arena. Made on the
/// workers, each worker's arena kept its own free pack-sized blocks (glibc keeps freed memory at
/// the top of an arena, which is what makes reusing it cheap), once per worker. Measured on the
/// chat dataset (2 workers): peak RSS of the initial backup about 162 -> 141 MiB, same time.
/// A worker waits only while one writer is made (an allocation, no copying).
final class PackWriterFactory: @unchecked Sendable {
    private let cond = NSCondition()
    private var requests = 0
    private var ready: [PackWriter] = []
    private var stopped = false
    private let make: () -> PackWriter

    init(make: @escaping () -> PackWriter) {
        self.make = make
        let t = Thread { [self] in self.serve() }
        t.stackSize = 1 << 20
        t.start()
    }

    /// A new, empty writer.
    func next() -> PackWriter {
        cond.lock()
        defer { cond.unlock() }
        if stopped { return make() }
        requests += 1
        cond.broadcast()
        while ready.isEmpty && !stopped { cond.wait() }
        if ready.isEmpty { return make() }
        return ready.removeLast()
    }

    /// Ends the thread (after the workers are done).
    func stop() {
        cond.lock()
        stopped = true
        cond.broadcast()
        cond.unlock()
    }

    private func serve() {
        cond.lock()
        while true {
            while requests == 0 && !stopped { cond.wait() }
            if stopped { break }
            requests -= 1
            cond.unlock()
            let w = make()
            cond.lock()
            ready.append(w)
            cond.broadcast()
        }
        cond.unlock()
    }
}
