import Testing
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
@testable @_spi(Testing) import CofferCore
import Crypto

@Suite struct ConfigTests {
    func sample() throws -> (RepositoryConfig, Data) {
        let config = try RepositoryConfig(repositoryID: fixedRepositoryID, parameters: .default)
        return (config, config.encoded(with: fixedKeys))
    }

    @Test func roundTrip() throws {
        let (config, bytes) = try sample()
        #expect(bytes.count == RepositoryConfig.encodedLength)
        let opened = try RepositoryConfig.open(bytes, key: fixedKey)
        #expect(opened.config == config)
        #expect(opened.keys.repositoryID == fixedRepositoryID)
        // Repository id readable before any key.
        #expect(try UnverifiedConfig(bytes).repositoryID == fixedRepositoryID)
    }

    @Test func freshConfigsHaveRandomIDs() throws {
        let a = try RepositoryConfig(), b = try RepositoryConfig()
        #expect(a.repositoryID.count == 16)
        #expect(a.repositoryID != b.repositoryID)
        let key = BackupKey()
        #expect(try RepositoryConfig.open(a.encoded(with: a.keys(for: key)), key: key).config == a)
    }

    @Test func wrongKeyIsReportedAsWrongKey() throws {
        let (_, bytes) = try sample()
        #expect(throws: ConfigError.wrongKey) { try RepositoryConfig.open(bytes, key: BackupKey()) }
    }

    @Test func everyFlippedByteIsDamage() throws {
        let (_, bytes) = try sample()
        for i in 0..<bytes.count {
            for bit in [UInt8(0x01), 0x80] {
                var b = bytes
                b[i] ^= bit
                do {
                    _ = try RepositoryConfig.open(b, key: fixedKey)
                    Issue.record("flipped byte \(i) was accepted")
                } catch {
                    // The checksum covers body and tag, so any flip is damage, never "wrong key".
                    #expect(error.isDamage, "byte \(i): \(error)")
                }
            }
        }
    }

    @Test func truncationIsDamage() throws {
        let (_, bytes) = try sample()
        for n in [0, 1, 10, 73, 74, bytes.count - 1] {
            #expect(throws: ConfigError.self) { try UnverifiedConfig(bytes.prefix(n)) }
            do { _ = try UnverifiedConfig(bytes.prefix(n)) } catch { #expect(error.isDamage) }
        }
        // Extra bytes at the end are damage too.
        do { _ = try UnverifiedConfig(bytes + [0]); Issue.record("extended config accepted") } catch { #expect(error.isDamage) }
    }

    /// Re-checksums a modified body, as a newer (or hostile) writer without the key could.
    func rewrite(_ bytes: Data, _ edit: (inout [UInt8]) -> Void, retag: Bool) -> Data {
        var body = Array(bytes.prefix(RepositoryConfig.bodyLength))
        edit(&body)
        var tag = Array(bytes[RepositoryConfig.bodyLength..<RepositoryConfig.bodyLength + 32])
        if retag { tag = Array(HMAC<SHA256>.authenticationCode(for: body, using: fixedKeys.configKey)) }
        let sum = Array(SHA256.hash(data: body + tag))
        return Data(body + tag + sum)
    }

    @Test func unknownVersionIsReported() throws {
        let (_, bytes) = try sample()
        let v2 = rewrite(bytes, { $0[9] = 2 }, retag: false)
        #expect(throws: ConfigError.unsupportedVersion(found: 2)) { try UnverifiedConfig(v2) }
        let notConfig = rewrite(bytes, { $0[0] = UInt8(ascii: "X") }, retag: false)
        #expect(throws: ConfigError.damaged(reason: "not a Coffer repository config")) { try UnverifiedConfig(notConfig) }
    }

    @Test func goodChecksumBadTagIsWrongKey() throws {
        let (_, bytes) = try sample()
        // Someone without the key changes a parameter and fixes the checksum: the tag catches it.
        let forged = rewrite(bytes, { $0[33] ^= 1 }, retag: false)
        #expect(throws: ConfigError.wrongKey) { try RepositoryConfig.open(forged, key: fixedKey) }
    }

    @Test func parametersOutOfBoundsAreRejected() throws {
        let (_, bytes) = try sample()
        // Authentic configs (re-tagged with the key) with bad parameters.
        let cases: [(Int, UInt8)] = [(30, 0xff), (35, 0x03), (49, 1), (38, 0x40), (42, 7), (43, 0), (43, 10), (44, 9), (45, 1), (26, 1)]
        for (offset, value) in cases {
            let bad = rewrite(bytes, { $0[offset] = value }, retag: true)
            do {
                _ = try RepositoryConfig.open(bad, key: fixedKey)
                Issue.record("offset \(offset) = \(value) accepted")
            } catch {
                guard error.code == .parameterOutOfBounds else {
                    Issue.record("offset \(offset): \(error)")
                    continue
                }
            }
        }
        #expect(throws: ConfigError.self) {
            try RepositoryConfig(repositoryID: fixedRepositoryID, parameters: .init(fileChunkSize: 1000))
        }
        #expect(throws: ConfigError.self) {
            try RepositoryConfig(repositoryID: fixedRepositoryID, parameters: .init(sqliteGroupSize: 3 << 14))
        }
        #expect(throws: ConfigError.self) {
            try RepositoryConfig(repositoryID: fixedRepositoryID, parameters: .init(targetPackSize: 1 << 30))
        }
        #expect(throws: ConfigError.self) { try RepositoryConfig(repositoryID: Data([1, 2]), parameters: .default) }
    }

    @Test func errorsSayWhatToDoAndNeverSuggestDeleting() {
        for e in [ConfigError.damaged(reason: "checksum mismatch"), .wrongKey, .unsupportedVersion(found: 9),
                  .parameterOutOfBounds(name: "x", value: 1, allowed: "2")] {
            let text = e.description.lowercased()
            #expect(!text.contains("delete") && !text.contains("reinit") && !text.contains("init "))
        }
    }
}
