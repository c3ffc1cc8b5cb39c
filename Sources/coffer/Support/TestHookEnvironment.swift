import Foundation

#if DEBUG
@_spi(Testing) import CofferBackup
@_spi(Testing) import CofferStorage

/// Debug builds only: the tests drive the real `coffer` binary and ask it to crash or stop at a
/// known point through the environment. The libraries never read these variables (a host app's
/// environment could otherwise stop or kill its backups); this executable translates them into the
/// SPI hooks, and release builds do not contain this code at all.
///
/// - `COFFER_TEST_CRASH_AT=<point>[:<n>]`: SIGKILL at the n-th time a crash point is reached
///   (the points are listed on `TestHooks`); `storage-temporary-written` kills the first write of a
///   folder repository right after its temporary file is written.
/// - `COFFER_TEST_STOP_AFTER_PACKS=<n>`: SIGSTOP once a backup has uploaded n packs.
/// - `COFFER_TEST_STOP_BEFORE_DELETING` (any value): SIGSTOP right before prune deletes.
enum TestHookEnvironment {
    static func install(_ environment: [String: String] = ProcessInfo.processInfo.environment) {
        if let v = environment["COFFER_TEST_CRASH_AT"], !v.isEmpty {
            if v == "storage-temporary-written" {
                LocalStorage.crashAfterTemporaryWrite.withLock { $0 = true }
            } else {
                let parts = v.split(separator: ":", maxSplits: 1)
                TestHooks.crash(at: String(parts[0]), count: parts.count == 2 ? Int(parts[1]) ?? 1 : 1)
            }
        }
        if let n = environment["COFFER_TEST_STOP_AFTER_PACKS"].flatMap({ Int($0) }) { TestHooks.stop(afterPacks: n) }
        if environment["COFFER_TEST_STOP_BEFORE_DELETING"] != nil { TestHooks.stop(beforeDeleting: true) }
    }
}
#else
enum TestHookEnvironment {
    static func install() {}
}
#endif
