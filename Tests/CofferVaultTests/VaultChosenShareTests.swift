import CofferCore
import CofferRealm
import Foundation
import Testing
@testable import CofferVault

/// Records which realms each message type was sent to.
final class CountingTransport: RealmTransport, Sendable {
    let inner: any RealmTransport
    let sent = Mutex2<[VaultMessageType: Set<RealmID>]>([:])

    init(inner: any RealmTransport) { self.inner = inner }

    func call(_ request: VaultRequest, realm: PinnedRealm) async -> RealmReply {
        sent.withLock { $0[request.type, default: []].insert(realm.id) }
        return await inner.call(request, realm: realm)
    }

    func realms(for type: VaultMessageType) -> Set<RealmID> { sent.withLock { $0[type] ?? [] } }
}

@Suite("A realm returning a chosen share", .serialized)
struct VaultChosenShareTests {
    @Test("another realm's share, signed for that realm's x, is invalid and named; the next recovery still asks exactly the configured realms")
    func anotherRealmsShareIsRejected() async throws {
        let h = try await FlowHarness.start()
        try await stopping(h) {
            let key = BackupKey()
            try await h.client().register(key: key, password: "pw", user: "fay")
            let liar = h.config.realms[1].id, donor = h.config.realms[2].id

            // Record the donor realm's genuine Q1 answer (a share and a signature valid for the donor's x).
            let recorded = Mutex2<Q1Answer?>(nil)
            let recorder = TamperingTransport(inner: HTTPRealmTransport(timeout: .seconds(30)), targets: [donor]) { answer in
                if case .q1(let a) = answer { recorded.withLock { $0 = a } }
                return answer
            }
            _ = try await h.client(transport: recorder).recover(password: "pw", user: "fay", rotate: false)
            let donorAnswer = try #require(recorded.withLock { $0 })

            // The liar hands out the donor's share and signature as its own (a share for another x).
            let swap = TamperingTransport(inner: HTTPRealmTransport(timeout: .seconds(30)), targets: [liar]) { answer in
                guard case .q1(var a) = answer else { return answer }
                a.maskedShare = donorAnswer.maskedShare
                a.signature = donorAnswer.signature
                return .q1(a)
            }
            let counted = CountingTransport(inner: swap)
            let result = try await h.client(transport: counted).recover(password: "pw", user: "fay", rotate: false)
            #expect(result.key.constantTimeEquals(key), "never a key other than the registered one")
            #expect(result.faulty.map(\.realmID) == [liar])
            #expect(result.faulty.first?.reason.contains("signature") == true, "\(result.faulty)")

            // The lie changes nothing about whom the client asks next: every configured realm, no other.
            let configured = Set(h.config.realms.map(\.id))
            #expect(counted.realms(for: .q0) == configured)
            let next = CountingTransport(inner: HTTPRealmTransport(timeout: .seconds(30)))
            let again = try await h.client(transport: next).recover(password: "pw", user: "fay", rotate: false)
            #expect(again.key.constantTimeEquals(key))
            #expect(next.realms(for: .q0) == configured)
            #expect(next.realms(for: .q1) == configured)
        }
    }
}
