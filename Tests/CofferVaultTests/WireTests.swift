import Foundation
import Testing
import Crypto
@testable import CofferVault

/// Samples of every message, with distinct non-zero bytes so that a field swap shows.
enum Samples {
    static func bytes(_ n: Int, _ seed: UInt8) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: Int(seed) &* 31 &+ $0 &* 7 &+ 1) } }
    static let token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln"
    static let element: [UInt8] = [0x02] + bytes(48, 3)

    static var requests: [VaultRequest] {
        [
            .q0(Q0Request(token: token)),
            .r1(R1Request(token: token, blindedElement: element)),
            .r2(R2Request(token: token, pendingID: try! PendingID(bytes: bytes(16, 1)), expectedVersion: .zero,
                          version: try! RecordVersion(bytes: bytes(16, 2)), maskedShare: bytes(32, 4), commitment: bytes(32, 5),
                          verificationKey: bytes(32, 6), signature: bytes(64, 7), unlockTag: bytes(32, 8),
                          wrappedKey: bytes(60, 9), policy: .default, replaceProof: bytes(32, 17))),
            .q1(Q1Request(token: token, ticket: try! Ticket(bytes: bytes(32, 10)), version: try! RecordVersion(bytes: bytes(16, 11)),
                          blindedElement: element)),
            .q2(Q2Request(token: token, version: try! RecordVersion(bytes: bytes(16, 12)), challenge: try! Challenge(bytes: bytes(32, 13)),
                          unlockProof: bytes(32, 14))),
            .delete(DeleteRequest(token: token, ticket: try! Ticket(bytes: bytes(32, 15)), expectedVersion: try! RecordVersion(bytes: bytes(16, 16)))),
        ]
    }

    static var answers: [(VaultMessageType, VaultAnswer)] {
        [
            (.q0, .q0(Q0Answer(state: .active, version: try! RecordVersion(bytes: bytes(16, 20)), policy: .default,
                               commitment: bytes(32, 21), verificationKey: bytes(32, 22), attemptsLeft: 7,
                               ticket: try! Ticket(bytes: bytes(32, 23))))),
            (.q0, .q0(.notRegistered(ticket: try! Ticket(bytes: bytes(32, 24))))),
            (.q0, .q0(.locked(version: try! RecordVersion(bytes: bytes(16, 25)), ticket: try! Ticket(bytes: bytes(32, 26))))),
            (.r1, .r1(R1Answer(pendingID: try! PendingID(bytes: bytes(16, 27)), evaluatedElement: element, proof: bytes(96, 28),
                               oprfPublicKey: element))),
            (.r2, .r2(R2Answer(version: try! RecordVersion(bytes: bytes(16, 29))))),
            (.q1, .q1(Q1Answer(evaluatedElement: element, proof: bytes(96, 30), oprfPublicKey: element, maskedShare: bytes(32, 31),
                               signature: bytes(64, 32), challenge: try! Challenge(bytes: bytes(32, 33)), attemptsLeft: 9))),
            (.q2, .q2(Q2Answer(wrappedKey: bytes(60, 34)))),
            (.delete, .delete(DeleteAnswer(deletedVersion: try! RecordVersion(bytes: bytes(16, 35))))),
            (.q1, .error(RealmErrorAnswer(code: .locked, currentVersion: try! RecordVersion(bytes: bytes(16, 36))))),
            (.q2, .error(RealmErrorAnswer(code: .unlockFailed, attemptsLeft: 3))),
            (.r2, .error(RealmErrorAnswer(code: .versionMismatch, currentVersion: try! RecordVersion(bytes: bytes(16, 37))))),
        ]
    }
}

@Suite struct WireEncodingTests {
    @Test func requestsRoundTripAtTheirFixedSize() throws {
        for request in Samples.requests {
            let encoded = try request.encode()
            #expect(encoded.count == request.type.requestPaddedSize)
            #expect(encoded[0] == request.type.rawValue)
            #expect(try VaultRequest.decode(encoded, type: request.type) == request)
        }
    }

    @Test func answersRoundTripAtTheirFixedSize() throws {
        for (type, answer) in Samples.answers {
            let encoded = try answer.encode(for: type)
            #expect(encoded.count == type.answerPaddedSize)
            #expect(try VaultAnswer.decode(encoded, for: type) == answer)
        }
    }

    @Test func truncatedOrLongInputIsRejected() throws {
        for request in Samples.requests {
            let encoded = try request.encode()
            #expect(throws: WireError.self) { try VaultRequest.decode(encoded.dropLast(), type: request.type) }
            #expect(throws: WireError.self) { try VaultRequest.decode(encoded + [0], type: request.type) }
            #expect(throws: WireError.self) { try VaultRequest.decode([UInt8](), type: request.type) }
        }
        for (type, answer) in Samples.answers {
            let encoded = try answer.encode(for: type)
            #expect(throws: WireError.self) { try VaultAnswer.decode(encoded.dropLast(), for: type) }
            #expect(throws: WireError.self) { try VaultAnswer.decode(encoded + [0], for: type) }
        }
    }

    @Test func nonZeroPaddingIsTrailingData() throws {
        for request in Samples.requests {
            var encoded = try request.encode()
            encoded[encoded.count - 1] = 1
            #expect(throws: WireError.self) {
                try VaultRequest.decode(encoded, type: request.type)
            }
        }
        var answer = try Samples.answers[4].1.encode(for: .r2)
        answer[100] = 0xFF
        #expect(throws: WireError.self) { try VaultAnswer.decode(answer, for: .r2) }
    }

    @Test func aLengthPrefixRunningPastTheEndIsTruncation() throws {
        // A Q0 body whose token length claims more than the padded body holds.
        var body = [VaultMessageType.q0.rawValue, 0x10, 0x00] + [UInt8](repeating: 0x41, count: 10)
        body += [UInt8](repeating: 0, count: VaultMessageType.q0.requestPaddedSize - body.count)
        #expect(throws: WireError.self) { try VaultRequest.decode(body, type: .q0) }
    }

    @Test func wrongTypeByteIsRejected() throws {
        let encoded = try Samples.requests[0].encode()
        #expect(throws: WireError.unexpectedType(expected: 0x04, found: 0x01)) { try VaultRequest.decode(encoded, type: .q1) }
        let a = try Samples.answers[4].1.encode(for: .r2)
        #expect(throws: WireError.self) { try VaultAnswer.decode(a, for: .q2) }
    }

    @Test func oversizeLengthPrefixedFieldsAreRejected() throws {
        var w = WireWriter()
        #expect(throws: WireError.oversize(field: "x", length: 65536)) { try w.lp([UInt8](repeating: 0, count: 65536), field: "x") }
        try w.lp([UInt8](repeating: 0, count: 65535), field: "x")
        #expect(w.bytes.count == 65537)
        let longToken = String(repeating: "a", count: WireSize.maxToken + 1)
        #expect(throws: WireError.self) { try VaultRequest.q0(Q0Request(token: longToken)).encode() }
    }

    @Test func fieldLengthsAreEnforcedWhenEncoding() {
        #expect(throws: WireError.self) { try VaultRequest.r1(R1Request(token: "t", blindedElement: [1, 2, 3])).encode() }
        #expect(throws: WireError.self) { try VaultAnswer.q2(Q2Answer(wrappedKey: [0])).encode(for: .q2) }
        // a success answer of another type does not fit
        #expect(throws: WireError.self) { try VaultAnswer.q2(Q2Answer(wrappedKey: Samples.bytes(60, 1))).encode(for: .q1) }
    }

    @Test func policyBoundsAreEnforcedOnDecode() throws {
        #expect(try VaultPolicy(bytes: [1, 16, 8, 1, 10]) == .default)
        #expect(throws: WireError.self) { try VaultPolicy(bytes: [1, 14, 8, 1, 10]) }   // N = 2^14 too weak
        #expect(throws: WireError.self) { try VaultPolicy(bytes: [1, 21, 8, 1, 10]) }   // N = 2^21 too costly
        #expect(throws: WireError.self) { try VaultPolicy(bytes: [1, 16, 4, 1, 10]) }   // r ≠ 8
        #expect(throws: WireError.self) { try VaultPolicy(bytes: [1, 16, 8, 0, 10]) }   // p = 0
        #expect(throws: WireError.self) { try VaultPolicy(bytes: [1, 16, 8, 5, 10]) }   // p = 5
        #expect(throws: WireError.self) { try VaultPolicy(bytes: [2, 16, 8, 1, 10]) }   // unknown KDF
        #expect(throws: WireError.self) { try VaultPolicy(bytes: [1, 16, 8, 1, 0]) }    // no guesses
    }

    @Test func aQ0AnswerWithoutRegistrationMustHaveZeroFields() throws {
        var encoded = try VaultAnswer.q0(.notRegistered(ticket: .random())).encode(for: .q0)
        encoded[2] = 1  // a version on a "none" answer
        #expect(throws: WireError.self) { try VaultAnswer.decode(encoded, for: .q0) }
    }

    @Test func scopesAdmitOnlyTheirRequests() {
        #expect(VaultScope.status.allows(.q0) && !VaultScope.status.allows(.q1))
        #expect(VaultScope.recover.allows(.q1) && VaultScope.recover.allows(.q2) && !VaultScope.recover.allows(.r2))
        #expect(VaultScope.register.allows(.r1) && !VaultScope.register.allows(.delete))
        #expect(VaultScope.delete.allows(.delete) && !VaultScope.delete.allows(.q1))
        #expect(VaultScope.register.maxLifetimeSeconds == 600 && VaultScope.recover.maxLifetimeSeconds == 86400)
        // Issue 11, problem 8: `reset` admits registration only (and the realm counts each use).
        #expect(VaultScope.reset.allows(.r1) && VaultScope.reset.allows(.r2) && VaultScope.reset.allows(.q0))
        #expect(!VaultScope.reset.allows(.q1) && !VaultScope.reset.allows(.q2) && !VaultScope.reset.allows(.delete) && !VaultScope.reset.allows(.headWrite))
        #expect(VaultScope.reset.maxLifetimeSeconds == 600)
    }
}

@Suite struct ChannelTests {
    static let realmKey = try! XWingMLKEM768X25519.PrivateKey.generate()
    static let realmID = RealmID.random()
    static var pinned: RealmPublicKey { RealmPublicKey(id: 7, publicKey: realmKey.publicKey) }

    @Test func requestAndResponseRoundTrip() throws {
        let body = try Samples.requests[3].encode()
        let (sealed, opener) = try VaultChannel.sealRequest(body: body, type: .q1, realmID: Self.realmID, key: Self.pinned)
        #expect(try VaultChannel.keyID(ofRequest: sealed) == 7)
        #expect(sealed.count == 4 + 1120 + body.count + 16)
        let (opened, sealer) = try VaultChannel.openRequest(sealed, type: .q1, realmID: Self.realmID, privateKeys: [7: Self.realmKey])
        #expect(opened == body)
        let answer = try Samples.answers[5].1.encode(for: .q1)
        let response = try sealer.seal(answer)
        #expect(response.count == 32 + answer.count + 16)
        #expect(try opener.open(response) == answer)
    }

    @Test func aFlippedByteAnywhereInTheRequestFails() throws {
        let body = try Samples.requests[0].encode()
        let (sealed, _) = try VaultChannel.sealRequest(body: body, type: .q0, realmID: Self.realmID, key: Self.pinned)
        for position in [4, 500, 1123, 1124, 2000, sealed.count - 1] {
            var tampered = sealed
            tampered[position] ^= 0x01
            #expect(throws: ChannelError.self) {
                try VaultChannel.openRequest(tampered, type: .q0, realmID: Self.realmID, privateKeys: [7: Self.realmKey])
            }
        }
        var otherKeyID = sealed
        otherKeyID[3] = 8
        #expect(throws: ChannelError.unknownKey(8)) {
            try VaultChannel.openRequest(otherKeyID, type: .q0, realmID: Self.realmID, privateKeys: [7: Self.realmKey])
        }
    }

    @Test func typeAndRealmAreBound() throws {
        let body = try Samples.requests[0].encode()
        let (sealed, _) = try VaultChannel.sealRequest(body: body, type: .q0, realmID: Self.realmID, key: Self.pinned)
        // Posted to another path (another aad) or opened by another realm id (another info): fails.
        #expect(throws: ChannelError.self) {
            try VaultChannel.openRequest(sealed, type: .q1, realmID: Self.realmID, privateKeys: [7: Self.realmKey])
        }
        #expect(throws: ChannelError.self) {
            try VaultChannel.openRequest(sealed, type: .q0, realmID: RealmID.random(), privateKeys: [7: Self.realmKey])
        }
    }

    @Test func aResponseFromAnotherRequestOrTamperedFails() throws {
        let body = try Samples.requests[0].encode()
        let (sealedA, openerA) = try VaultChannel.sealRequest(body: body, type: .q0, realmID: Self.realmID, key: Self.pinned)
        let (sealedB, openerB) = try VaultChannel.sealRequest(body: body, type: .q0, realmID: Self.realmID, key: Self.pinned)
        let (_, sealerA) = try VaultChannel.openRequest(sealedA, type: .q0, realmID: Self.realmID, privateKeys: [7: Self.realmKey])
        _ = try VaultChannel.openRequest(sealedB, type: .q0, realmID: Self.realmID, privateKeys: [7: Self.realmKey])
        let answer = try Samples.answers[0].1.encode(for: .q0)
        let responseA = try sealerA.seal(answer)
        #expect(try openerA.open(responseA) == answer)
        #expect(throws: ChannelError.openFailed) { try openerB.open(responseA) }
        for position in [0, 31, 32, responseA.count - 1] {
            var t = responseA
            t[position] ^= 0x80
            #expect(throws: ChannelError.openFailed) { try openerA.open(t) }
        }
        #expect(throws: ChannelError.openFailed) { try openerA.open(responseA.prefix(40)) }
        #expect(throws: ChannelError.openFailed) { try openerA.open(answer) }  // unsealed plaintext
    }

    @Test func responsesToTheSameRequestDifferButBothOpen() throws {
        let body = try Samples.requests[0].encode()
        let (sealed, opener) = try VaultChannel.sealRequest(body: body, type: .q0, realmID: Self.realmID, key: Self.pinned)
        let (_, sealer) = try VaultChannel.openRequest(sealed, type: .q0, realmID: Self.realmID, privateKeys: [7: Self.realmKey])
        let a = try Samples.answers[1].1.encode(for: .q0)
        let r1 = try sealer.seal(a), r2 = try sealer.seal(a)
        #expect(r1 != r2)
        #expect(try opener.open(r1) == a && opener.open(r2) == a)
    }
}
