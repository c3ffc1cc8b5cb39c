@_spi(Fuzzing) import CofferCore
@_spi(Fuzzing) import CofferRealm
@_spi(Fuzzing) import CofferVault
import Foundation
import Testing

/// The libFuzzer harnesses of the vault and the realm (Fuzz/, docs/FUZZING.md), replayed without
/// libFuzzer on every test run: their seeds, the committed crash and regression inputs
/// (Fuzz/Regressions/NAME/) and a few thousand deterministic mutations. A crash fails the run; a
/// broken property (a non-canonical encoding accepted, an envelope that opens under another type,
/// a token accepted against a stated rule, ...) is a finding.
@Suite("Fuzz harnesses replayed: envelope, message bodies, vault.json, tokens")
struct VaultFuzzReplayTests {
    static let harnesses = VaultFuzzHarnesses.all + RealmFuzzHarnesses.all
    static let sourceRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    @Test("every network parser of the vault has a harness")
    func coverage() {
        #expect(Set(Self.harnesses.map(\.name)) == ["sealed-envelope", "vault-request", "vault-answer", "vault-config", "realm-token"])
    }

    @Test("seeds, regression inputs and 3000 mutations break no property", arguments: harnesses.map(\.name))
    func replay(_ name: String) async throws {
        let harness = try #require(Self.harnesses.first { $0.name == name })
        let regressions = FuzzReplay.regressions(name, root: Self.sourceRoot)
        let report = await FuzzReplay.run(harness, regressions: regressions, mutations: 3000)
        #expect(report.findings.isEmpty, "\(report.findings.prefix(5).joined(separator: "\n"))")
        // The harness reached its subject both ways: some inputs parsed, some were refused.
        #expect(report.accepted > 0 && report.rejected > 0, "\(name): \(report.accepted) accepted, \(report.rejected) rejected")
        #expect(report.inputs == harness.seeds().count + regressions.count + 3000)
    }

    @Test("valid seeds are accepted: a genuine sealed request opens, a valid request and Q0 answer decode, a signed token verifies")
    func genuineInputsAccepted() async throws {
        for harness in Self.harnesses {
            let seeds = harness.seeds()
            var accepted = 0
            for seed in seeds where try await harness.run(seed) == .accepted { accepted += 1 }
            #expect(accepted > 0, "\(harness.name): no seed accepted")
        }
        // One seed per kind, checked by name: the first sealed request (mode 0) opens at the realm.
        #expect(try await VaultFuzzHarnesses.sealedEnvelope.run(VaultFuzzHarnesses.sealedEnvelope.seeds()[0]) == .accepted)
        // A token signed by the pinned key, for the right audience and scope, verifies; the same
        // token for another type than its scope allows does not.
        let tokenSeed = RealmFuzzHarnesses.token.seeds()[2]
        #expect(try await RealmFuzzHarnesses.token.run(tokenSeed) == .accepted)
        let q1 = VaultMessageType.allCases.firstIndex(of: .q1)!
        #expect(try await RealmFuzzHarnesses.token.run([UInt8(q1 << 2)] + tokenSeed.dropFirst()) == .rejected,
                "a status-scoped token is refused for Q1")
    }
}
