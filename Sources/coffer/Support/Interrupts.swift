#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Dispatch
import Synchronization

/// Ctrl-C and SIGTERM during a backup or restore cancel the running operation instead of killing the
/// process, so the engine deletes its private temporary files (the plaintext SQLite copy, restore's
/// temporary files) and keeps what it already uploaded for the next run. A second signal exits at once.
enum Interrupts {
    private static let count = Atomic<Int>(0)

    /// Whether a SIGINT or SIGTERM arrived during ``cancellingOnSignals(_:)``.
    static var received: Bool { count.load(ordering: .relaxed) > 0 }

    static func cancellingOnSignals<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let task = Task { try await body() }
        let signals = [SIGINT, SIGTERM]
        let sources = signals.map { sig -> any DispatchSourceSignal in
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler {
                if count.add(1, ordering: .relaxed).newValue > 1 { _exit(130) }
                Terminal.err("\ncoffer: interrupted, stopping cleanly (press Ctrl-C again to quit at once)\n")
                task.cancel()
            }
            source.resume()
            return source
        }
        defer {
            for s in sources { s.cancel() }
            for sig in signals { signal(sig, SIG_DFL) }
        }
        return try await task.value
    }
}
