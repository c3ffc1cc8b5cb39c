import GRDB
import Synchronization

/// Batches concurrent write transactions into one SQLite commit.
///
/// Each job runs inside its own savepoint (so one failing job rolls back only itself) within a
/// single `BEGIN IMMEDIATE ... COMMIT`; every job's caller is resumed only after that commit is
/// durable (WAL, `synchronous=FULL`). While one commit is being fsynced, new jobs queue up and go
/// into the next one: under load the cost of an fsync is shared by every request in the batch.
final class GroupCommit: Sendable {
    private struct Job: Sendable {
        /// Runs the job's body in a savepoint, keeping its result for `complete`.
        let run: @Sendable (Database) -> Void
        /// Delivers the result, or `commitError` if the batch's commit failed.
        let complete: @Sendable (_ commitError: (any Error)?) -> Void
    }

    private struct State {
        var queue: [Job] = []
        var flushing = false
        var batches = 0
        var jobs = 0
    }

    private let writer: DatabasePool
    private let state = Mutex(State())

    init(writer: DatabasePool) {
        self.writer = writer
    }

    /// (batches committed, jobs committed): for the benchmark's report.
    var counts: (batches: Int, jobs: Int) { state.withLock { ($0.batches, $0.jobs) } }

    /// Runs `body` in the next group transaction; returns once it is committed and durable.
    func write<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (cont: CheckedContinuation<T, any Error>) in
            let box = ResultBox<T>()
            // The replay mark of the request this write serves (RealmReplay.swift), inserted once,
            // outside the job's savepoint: a refusal that rolls the job back still keeps it.
            let mark = RequestMark.current?.take()
            let job = Job(
                run: { db in
                    do {
                        if let mark { try RealmStore.insertMark(mark, db) }
                        var value: T?
                        try db.inSavepoint {
                            value = try body(db)
                            return .commit
                        }
                        box.set(.success(value!))
                    } catch {
                        box.set(.failure(error))
                    }
                },
                complete: { commitError in
                    if let commitError {
                        cont.resume(throwing: commitError)
                    } else {
                        cont.resume(with: box.take() ?? .failure(CancellationError()))
                    }
                })
            let start = state.withLock { s -> Bool in
                s.queue.append(job)
                if s.flushing { return false }
                s.flushing = true
                return true
            }
            if start {
                Task { await self.flushLoop() }
            }
        }
    }

    private func flushLoop() async {
        while true {
            let batch = state.withLock { s -> [Job] in
                let b = s.queue
                s.queue = []
                if b.isEmpty { s.flushing = false }
                return b
            }
            if batch.isEmpty { return }
            do {
                try await writer.write { db in
                    for job in batch { job.run(db) }
                }
                state.withLock {
                    $0.batches += 1
                    $0.jobs += batch.count
                }
                for job in batch { job.complete(nil) }
            } catch {
                for job in batch { job.complete(error) }
            }
        }
    }
}

private final class ResultBox<T: Sendable>: Sendable {
    private let value = Mutex<Result<T, any Error>?>(nil)
    func set(_ r: Result<T, any Error>) { value.withLock { $0 = r } }
    func take() -> Result<T, any Error>? { value.withLock { $0 } }
}
