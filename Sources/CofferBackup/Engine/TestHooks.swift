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

/// Crash injection for the tests (as `KeyRotation.crashPoint` for key rotation): with
/// `COFFER_TEST_CRASH_AT=<point>` or `<point>:<n>` in the environment, the process kills itself
/// with SIGKILL (as `kill -9` would) the first (or the n-th) time it reaches that point. Without the
/// variable a crash point costs one comparison.
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
/// `index-cache-manifest` (the manifest written, unlisted files not yet removed).
enum TestHooks {
    private static let target: (name: String, count: Int)? = {
        guard let v = ProcessInfo.processInfo.environment["COFFER_TEST_CRASH_AT"], !v.isEmpty else { return nil }
        let parts = v.split(separator: ":", maxSplits: 1)
        let n = parts.count == 2 ? Int(parts[1]) ?? 1 : 1
        return (String(parts[0]), max(1, n))
    }()
    private static let reached = Mutex<[String: Int]>([:])

    /// True when the tests asked to crash at `name` (at any count).
    static func armed(_ name: String) -> Bool { target?.name == name }

    static func crashPoint(_ name: String) {
        guard let t = target, t.name == name else { return }
        let n = reached.withLock { counts -> Int in
            counts[name, default: 0] += 1
            return counts[name]!
        }
        if n == t.count { kill(getpid(), SIGKILL) }
    }
}
