import Crypto
import Foundation
import Synchronization

/// Per-token and per-user token buckets (`RealmConfig.Limits`): a request whose token verified
/// takes one unit from its token's bucket and one from its user's; when either is empty it is
/// answered `busy` and nothing else happens (no ticket, no curve operation, no transaction).
///
/// In memory: a restart refills every bucket, which only an operator can cause. The tables are
/// bounded: when one reaches `maxEntries`, buckets that have refilled completely (the same as
/// absent) are dropped (a scan, at most once a second, so a flood of new keys cannot make every
/// request pay for one); if that frees nothing, new keys are answered `busy` rather than letting
/// anyone start a fresh bucket by evicting a drained one.
final class RequestLimiter: Sendable {
    private struct Bucket {
        var units: Double
        var updated: Double
    }

    private struct Table {
        var buckets: [Data: Bucket] = [:]
        var lastPrune = -Double.infinity
    }

    private struct Tables {
        var tokens = Table()
        var users = Table()
    }

    let limits: RealmConfig.Limits
    let maxEntries: Int
    private let now: @Sendable () -> Date
    private let tables = Mutex(Tables())

    init(limits: RealmConfig.Limits, maxEntries: Int = 200_000, now: @escaping @Sendable () -> Date) {
        self.limits = limits
        self.maxEntries = maxEntries
        self.now = now
    }

    /// The key of a token's bucket (the token itself is not kept).
    static func tokenKey(_ token: String) -> Data { Data(SHA256.hash(data: Array(token.utf8))) }

    /// Takes one unit for `tokenKey` and one for `userKey`, both or neither. False: answer `busy`.
    func admit(tokenKey: Data, userKey: Data) -> Bool {
        let t = now().timeIntervalSince1970
        return tables.withLock { tables in
            guard let token = Self.available(&tables.tokens, tokenKey, limits.perToken, at: t, capacity: maxEntries),
                  let user = Self.available(&tables.users, userKey, limits.perUser, at: t, capacity: maxEntries),
                  token.units >= 1, user.units >= 1
            else { return false }
            tables.tokens.buckets[tokenKey] = Bucket(units: token.units - 1, updated: t)
            tables.users.buckets[userKey] = Bucket(units: user.units - 1, updated: t)
            return true
        }
    }

    /// The bucket for `key` refilled up to `t`, or nil when the table is full of buckets in use.
    private static func available(_ table: inout Table, _ key: Data, _ rate: RealmConfig.RateLimit,
                                  at t: Double, capacity: Int) -> Bucket? {
        let burst = Double(rate.burst)
        func refilled(_ b: Bucket) -> Double {
            min(burst, b.units + max(0, t - b.updated) * rate.perMinute / 60)
        }
        if let b = table.buckets[key] { return Bucket(units: refilled(b), updated: t) }
        if table.buckets.count >= capacity {
            guard t - table.lastPrune >= 1 || t < table.lastPrune else { return nil }
            table.lastPrune = t
            table.buckets = table.buckets.filter { refilled($0.value) < burst }
            if table.buckets.count >= capacity { return nil }
        }
        return Bucket(units: burst, updated: t)
    }
}

/// At most `perMinute` lines of one kind per minute; the rest are counted and reported in one line
/// when the next minute's first line is logged (a flood of refused tokens cannot flood the log).
final class LogLimiter: Sendable {
    private struct State {
        var windowStart: Double = -.infinity
        var logged = 0
        var suppressed = 0
    }

    let perMinute: Int
    private let now: @Sendable () -> Date
    private let state = Mutex(State())

    init(perMinute: Int, now: @escaping @Sendable () -> Date) {
        self.perMinute = perMinute
        self.now = now
    }

    /// Whether to log this line, and how many lines were suppressed in the window that just ended
    /// (non-zero only on the first line of a new window).
    func next() -> (log: Bool, suppressedBefore: Int) {
        let t = now().timeIntervalSince1970
        return state.withLock { s in
            var suppressed = 0
            if t - s.windowStart >= 60 || t < s.windowStart {
                suppressed = s.suppressed
                s = State(windowStart: t, logged: 0, suppressed: 0)
            }
            guard s.logged < perMinute else {
                s.suppressed += 1
                return (false, 0)
            }
            s.logged += 1
            return (true, suppressed)
        }
    }
}
