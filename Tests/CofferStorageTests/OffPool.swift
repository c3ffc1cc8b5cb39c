import Foundation

/// Runs blocking work (waiting for a child process, a scenario of several processes) on a thread
/// of its own: the test's task suspends instead of holding one of the cooperative pool's threads
/// (two on a 2-core machine), which the servers other suites run in this process need.
func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread { continuation.resume(with: Result { try body() }) }
    }
}
