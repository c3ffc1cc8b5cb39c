#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// Crash and stop injection for the tests, set through SPI (`@_spi(Testing)`), never read from the
/// environment by the library: a host app's environment cannot stop or kill its backups. The
/// `coffer` executable installs these from `COFFER_TEST_*` variables in debug builds only
/// (Sources/coffer/Support/TestHookEnvironment.swift), so the tests can drive the real binary.
///
/// A crash point kills the process with SIGKILL (as `kill -9` would) the first (or the n-th) time
/// it is reached; unarmed, it costs one lock and one comparison.
///
/// Points: `backup-pack` (a pack uploaded, before any index names it), `backup-index` (an index
/// object written by a checkpoint or the final drain), `backup-packed` (every pack and index of the
/// run stored, before the commit check), `backup-snapshot` (the snapshot written, before the
/// post-commit check); `prune-repacked` (the repacked packs uploaded, no index yet),
/// `prune-indexed` (the new complete index written, no mark yet), `prune-marked` (the mark
/// written, nothing deleted), `prune-deleting` (half of the deletions done); `repair-indexed`
/// (`repair index`: the new index written, the mark and the deletions not yet),
/// `repair-snapshot` (`repair snapshots`: a new snapshot written, the old one not yet removed);
/// `rotate-pack` (`key rotate`: a re-encrypted pack uploaded, before any index of the new
/// generation names it); `index-cache-temporary` (a run of the device's index cache written under
/// its temporary name), `index-cache-run` (the runs renamed, the manifest not yet written),
/// `index-cache-manifest` (the manifest written, unlisted files not yet removed); and key
/// rotation's steps (see ``KeyRotation``): `job-saved`, `staged`, `recorded`, `registered`,
/// `committed`, `cleaning`.
@_spi(Testing) public enum TestHooks {
    private struct State {
        var crashAt: (name: String, count: Int)?
        var reached: [String: Int] = [:]
        var stopAfterPacks: Int?
        var stopBeforeDeleting = false
    }
    private static let state = Mutex(State())

    /// Kill the process at the `count`-th time it reaches crash point `name` (nil: never).
    public static func crash(at name: String?, count: Int = 1) {
        state.withLock { $0.crashAt = name.map { ($0, max(1, count)) }; $0.reached = [:] }
    }

    /// Stop the process (SIGSTOP) once a backup has uploaded `packs` packs (nil: never), so a test can
    /// suspend a real backup at a known point and resume it with SIGCONT.
    public static func stop(afterPacks packs: Int?) { state.withLock { $0.stopAfterPacks = packs } }

    /// Stop the process (SIGSTOP) right before prune deletes anything.
    public static func stop(beforeDeleting: Bool) { state.withLock { $0.stopBeforeDeleting = beforeDeleting } }

    /// True when a crash is armed at `name` (at any count).
    static func armed(_ name: String) -> Bool { state.withLock { $0.crashAt?.name == name } }

    static var stopAfterPacks: Int? { state.withLock { $0.stopAfterPacks } }
    static var stopBeforeDeleting: Bool { state.withLock { $0.stopBeforeDeleting } }

    static func crashPoint(_ name: String) {
        let hit = state.withLock { s -> Bool in
            guard let t = s.crashAt, t.name == name else { return false }
            s.reached[name, default: 0] += 1
            return s.reached[name] == t.count
        }
        if hit { kill(getpid(), SIGKILL) }
    }
}
