@testable import CofferRealm
import Foundation
import Testing

/// The realm's in-memory request limiter, driven with a hand-moved clock (counts, never timing).
@Suite("Realm request limiter")
struct RequestLimiterTests {
    static let limits = RealmConfig.Limits(perToken: .init(burst: 2, perMinute: 60), perUser: .init(burst: 3, perMinute: 60),
                                           refusedTokenLogLinesPerMinute: 1)
    static func key(_ b: UInt8) -> Data { Data([b]) }

    @Test("one unit from the token's bucket and one from the user's, both or neither; refills at the rate")
    func buckets() {
        let clock = RealmStoreTests.TestClock()
        let l = RequestLimiter(limits: Self.limits, now: { clock.now })
        #expect(l.admit(tokenKey: Self.key(1), userKey: Self.key(9)))
        #expect(l.admit(tokenKey: Self.key(1), userKey: Self.key(9)))
        #expect(!l.admit(tokenKey: Self.key(1), userKey: Self.key(9)))    // the token's 2 are spent
        #expect(l.admit(tokenKey: Self.key(2), userKey: Self.key(9)))     // the user's third
        #expect(!l.admit(tokenKey: Self.key(3), userKey: Self.key(9)))    // the user's 3 are spent
        // The refused request took nothing from token 3: it still has both units for another user.
        #expect(l.admit(tokenKey: Self.key(3), userKey: Self.key(8)))
        #expect(l.admit(tokenKey: Self.key(3), userKey: Self.key(8)))
        clock.advance(1)   // 60 a minute: one unit back everywhere
        #expect(l.admit(tokenKey: Self.key(1), userKey: Self.key(9)))
        #expect(!l.admit(tokenKey: Self.key(1), userKey: Self.key(9)))
    }

    @Test("the tables are bounded: a full table refuses new keys until buckets have refilled, and never evicts one in use")
    func bounded() {
        let clock = RealmStoreTests.TestClock()
        let l = RequestLimiter(limits: Self.limits, maxEntries: 2, now: { clock.now })
        #expect(l.admit(tokenKey: Self.key(1), userKey: Self.key(1)))
        #expect(l.admit(tokenKey: Self.key(2), userKey: Self.key(2)))
        #expect(!l.admit(tokenKey: Self.key(3), userKey: Self.key(3)))    // full of buckets in use
        #expect(l.admit(tokenKey: Self.key(1), userKey: Self.key(1)))     // known keys still served
        clock.advance(5)   // every bucket refilled: they are dropped to make room
        #expect(l.admit(tokenKey: Self.key(3), userKey: Self.key(3)))
    }

    @Test("log limiter: N lines a minute, then a count of the rest with the next minute's first line")
    func logLimiter() {
        let clock = RealmStoreTests.TestClock()
        let l = LogLimiter(perMinute: 2, now: { clock.now })
        #expect(l.next() == (true, 0))
        #expect(l.next() == (true, 0))
        #expect(l.next() == (false, 0))
        #expect(l.next() == (false, 0))
        clock.advance(60)
        #expect(l.next() == (true, 2))
        #expect(l.next() == (true, 0))
    }
}
