import Foundation
import Testing
@testable import CofferBackup
import CofferCore
import CofferStorage

/// Every object the engine writes goes through a conditional create: a name already holding other
/// bytes (a forged or damaged object, or a hash collision) is a clear error and is never replaced;
/// the same bytes already there (a retried upload whose answer was lost) count as success.
@Suite struct ConditionalWriteTests {
    @Test("a name taken by different bytes is refused with a clear error and left as it was; identical bytes succeed")
    func collisionIsRefused() async throws {
        let scratch = Scratch()
        let t = try await TestRepo.make(scratch)
        let engine = t.repo.engine
        let taken = "snapshots/" + String(repeating: "ab", count: 32)
        let forged = Data("planted by the provider".utf8)
        try await t.storage.put(taken, data: forged)

        // Through writeSealed (index, snapshot and mark objects) ...
        await #expect(throws: BackupError.self) {
            do {
                _ = try await engine.writeSealed([1, 2, 3], type: .snapshot) { _ in taken }
            } catch let error as BackupError {
                #expect(error.code == .dataDamaged)
                #expect(error.object == taken)
                #expect(error.message.contains("different content") && error.message.contains("Nothing was overwritten"), "\(error.message)")
                throw error
            }
        }
        // ... and through the pack upload path.
        await #expect(throws: BackupError.self) { try await engine.objects.create(taken, data: Data([9, 9, 9])) }
        #expect(try await t.storage.get(taken) == forged, "the existing object must not be replaced")

        // A retried create of the same bytes is fine.
        try await engine.objects.create(taken, data: forged)

        try await t.storage.delete(taken)
        // And a whole backup still works (every pack, index and snapshot created conditionally).
        write(randomBytes(3 << 20, seed: 4), to: scratch.path("src/a.bin"))
        let s = try await t.repo.backup(paths: [scratch.path("src")])
        #expect(s.blobsUploadedAgain == 0)
        #expect(try await t.repo.check(readData: true).isClean)
    }
}
