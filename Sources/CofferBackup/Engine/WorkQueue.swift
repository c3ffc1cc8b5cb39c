import Synchronization

/// The backup workers' queue of work items (a database to capture, a segment of a file to read).
/// A worker that finds it empty suspends (it holds no thread) until another worker adds items (a
/// capture adds the captured copy's segments) or the last busy worker finishes; then every waiting
/// worker gets `nil` and ends. ``close()`` (a cancel, a failed upload) ends them all at once.
final class WorkQueue<Item: Sendable>: Sendable {
    private struct State {
        var items: [Item] = []
        var head = 0
        /// Workers holding an item (between `next()` and `done()`).
        var busy = 0
        var closed = false
        var waiters: [CheckedContinuation<Item?, Never>] = []

        /// Takes the next item for a worker, if any.
        mutating func take() -> Item? {
            guard !closed, head < items.count else { return nil }
            let item = items[head]
            head += 1
            busy += 1
            if head > 4096, head * 2 > items.count {
                items.removeFirst(head)
                head = 0
            }
            return item
        }

        /// Hands queued items to waiting workers; when nothing is queued and no worker is busy,
        /// nothing can be added any more: every waiter is ended. Returns whom to resume.
        mutating func wake() -> [(CheckedContinuation<Item?, Never>, Item?)] {
            var out: [(CheckedContinuation<Item?, Never>, Item?)] = []
            while !waiters.isEmpty, let item = take() { out.append((waiters.removeFirst(), item)) }
            if closed || (busy == 0 && head >= items.count) {
                closed = true
                out += waiters.map { ($0, nil) }
                waiters = []
            }
            return out
        }
    }

    private let state = Mutex(State())

    init() {}

    /// Queues items (before the workers start, or from a worker that is busy).
    func add(_ items: [Item]) {
        let resume = state.withLock { s in
            s.items.append(contentsOf: items)
            return s.wake()
        }
        for (c, item) in resume { c.resume(returning: item) }
    }

    /// The next item, or `nil` when the work is done or the queue was closed. A non-nil item must
    /// be followed by ``done()``.
    func next() async -> Item? {
        await withCheckedContinuation { c in
            let resume = state.withLock { s -> [(CheckedContinuation<Item?, Never>, Item?)] in
                if let item = s.take() { return [(c, item)] }
                s.waiters.append(c)
                return s.wake()
            }
            for (c, item) in resume { c.resume(returning: item) }
        }
    }

    /// A worker finished the item it took.
    func done() {
        let resume = state.withLock { s in
            s.busy -= 1
            return s.wake()
        }
        for (c, item) in resume { c.resume(returning: item) }
    }

    /// Ends the work: waiting workers get `nil`, and so does every later `next()`.
    func close() {
        let resume = state.withLock { s in
            s.closed = true
            return s.wake()
        }
        for (c, item) in resume { c.resume(returning: item) }
    }
}
