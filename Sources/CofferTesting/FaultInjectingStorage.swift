#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CofferStorage
import Synchronization

/// Wraps a ``Storage`` and makes chosen calls go wrong the way networks and providers do: a call
/// refused or failing, an answer lost after the write happened, a read cut short or with a byte
/// changed. For tests of what an app (or the engine) does then: that nothing wrong is written, that
/// a retry finishes the job, that damage is named.
///
/// ```swift
/// let storage = FaultInjectingStorage(MemoryStorage())
/// storage.inject(.loseAnswer, on: .create, times: 2)          // written, but the caller hears "reset"
/// storage.inject(.fail(.noSpace), on: .put, where: { $0.hasPrefix("index/") })
/// ```
///
/// Faults are used up in the order they were injected, each by the first call of its operation
/// whose object name it matches. ``calls(_:)`` counts every call that reached the wrapper.
public final class FaultInjectingStorage: Storage {
    /// The calls a fault can be attached to.
    public enum Operation: Sendable, Hashable, CaseIterable {
        case put, get, stat, list, delete, create
    }

    /// What goes wrong.
    public enum Fault: Sendable {
        /// The call fails with this code before reaching the storage (nothing happens there).
        case fail(StorageError.Code)
        /// The call reaches the storage and succeeds there, then the caller gets a transient error:
        /// a connection reset after the server acted (the retry must be safe).
        case loseAnswer
        /// A read returns only its first `count` bytes, undetected by the transport.
        case truncate(to: Int)
        /// A read returns the bytes with the byte at `offset` (from the end when negative) changed.
        case corrupt(at: Int)
    }

    private struct Armed {
        var fault: Fault
        var operation: Operation
        var times: Int
        var matches: @Sendable (String) -> Bool
    }

    public let base: any Storage
    private let armed = Mutex<[Armed]>([])
    private let counts = Mutex<[Operation: Int]>([:])
    private let retries: Bool?

    /// - Parameter retriesTransientFailures: what to tell the engine; `nil` forwards the base's answer.
    public init(_ base: any Storage, retriesTransientFailures: Bool? = nil) {
        self.base = base
        self.retries = retriesTransientFailures
    }

    public var location: String { base.location }
    public var retriesTransientFailures: Bool { retries ?? base.retriesTransientFailures }

    /// Arms `fault` for the next `times` calls of `operation` whose object name satisfies `matching`
    /// (`list` matches on its prefix, a batch delete on each name).
    public func inject(_ fault: Fault, on operation: Operation, times: Int = 1,
                       where matching: @escaping @Sendable (String) -> Bool = { _ in true }) {
        precondition(times > 0)
        armed.withLock { $0.append(Armed(fault: fault, operation: operation, times: times, matches: matching)) }
    }

    /// Faults armed and not used yet.
    public var faultsLeft: Int { armed.withLock { $0.reduce(0) { $0 + $1.times } } }

    /// How many calls of `operation` reached this wrapper (failed ones included).
    public func calls(_ operation: Operation) -> Int { counts.withLock { $0[operation] ?? 0 } }

    /// Counts the call and takes the first armed fault that applies to it.
    private func take(_ operation: Operation, _ name: String) -> Fault? {
        counts.withLock { $0[operation, default: 0] += 1 }
        return armed.withLock { all -> Fault? in
            guard let i = all.firstIndex(where: { $0.operation == operation && $0.matches(name) }) else { return nil }
            let fault = all[i].fault
            all[i].times -= 1
            if all[i].times == 0 { all.remove(at: i) }
            return fault
        }
    }

    private static func injected(_ code: StorageError.Code, _ name: String) -> StorageError {
        StorageError(code, name: name, message: "injected fault (\(code)) on \(name)")
    }

    /// Runs `body` under `fault`: `fail` before, `loseAnswer` after.
    private func run<T>(_ fault: Fault?, _ name: String, _ body: () async throws(StorageError) -> T) async throws(StorageError) -> T {
        switch fault {
        case .fail(let code):
            throw Self.injected(code, name)
        case .loseAnswer:
            _ = try await body()
            throw StorageError(.transient, name: name, message: "injected fault: the answer for \(name) was lost (connection reset)")
        default:
            return try await body()
        }
    }

    public func put(_ name: String, data: Data) async throws(StorageError) {
        try await run(take(.put, name), name) { () async throws(StorageError) in try await base.put(name, data: data) }
    }

    public func get(_ name: String, range: Range<Int>?) async throws(StorageError) -> Data {
        let fault = take(.get, name)
        var data = try await run(fault, name) { () async throws(StorageError) in try await base.get(name, range: range) }
        switch fault {
        case .truncate(let count):
            data = data.prefix(max(0, count))
        case .corrupt(let at):
            let i = at < 0 ? data.count + at : at
            if i >= 0, i < data.count { data[data.startIndex + i] ^= 0x5a }
        default:
            break
        }
        return data
    }

    public func stat(_ name: String) async throws(StorageError) -> ObjectInfo? {
        try await run(take(.stat, name), name) { () async throws(StorageError) in try await base.stat(name) }
    }

    public func list(prefix: String) async throws(StorageError) -> [ObjectInfo] {
        try await run(take(.list, prefix), prefix) { () async throws(StorageError) in try await base.list(prefix: prefix) }
    }

    public func delete(_ name: String) async throws(StorageError) {
        try await run(take(.delete, name), name) { () async throws(StorageError) in try await base.delete(name) }
    }

    public func delete(_ names: [String]) async throws(StorageError) {
        for name in names { try await delete(name) }
    }

    public func create(_ name: String, data: Data) async throws(StorageError) {
        try await run(take(.create, name), name) { () async throws(StorageError) in try await base.create(name, data: data) }
    }

    public func create(_ name: String, data: Data, sha256: [UInt8]) async throws(StorageError) {
        try await run(take(.create, name), name) { () async throws(StorageError) in
            try await base.create(name, data: data, sha256: sha256)
        }
    }

    /// Closes the wrapped storage too.
    public func close() async { await base.close() }
}
