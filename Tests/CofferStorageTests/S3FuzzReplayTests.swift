@_spi(Fuzzing) import CofferCore
@_spi(Fuzzing) import CofferS3
import Foundation
import Testing

/// The S3 harnesses of Fuzz/ replayed without libFuzzer (see VaultFuzzReplayTests).
@Suite("Fuzz harnesses replayed: S3 XML and dates")
struct S3FuzzReplayTests {
    static let sourceRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    @Test("seeds, regression inputs and 3000 mutations break no property", arguments: S3FuzzHarnesses.all.map(\.name))
    func replay(_ name: String) async throws {
        let harness = try #require(S3FuzzHarnesses.all.first { $0.name == name })
        let regressions = FuzzReplay.regressions(name, root: Self.sourceRoot)
        let report = await FuzzReplay.run(harness, regressions: regressions, mutations: 3000)
        #expect(report.findings.isEmpty, "\(report.findings.prefix(5).joined(separator: "\n"))")
        #expect(report.accepted > 0 && report.rejected > 0, "\(name): \(report.accepted) accepted, \(report.rejected) rejected")
        if name == "s3-date" {
            #expect(regressions.contains { String(decoding: $0.bytes, as: UTF8.self).contains("99999999999999999") },
                    "the huge-year header is kept as a regression input")
        }
    }
}
