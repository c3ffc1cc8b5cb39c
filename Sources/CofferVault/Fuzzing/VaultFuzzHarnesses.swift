#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
@_spi(Fuzzing) import CofferCore
import Crypto
import CofferCore

/// Fuzz harnesses for what a realm or a client reads from the network in this module: the sealed
/// envelope (both directions), every request and answer body, and `vault.json` / a realm's
/// descriptor. See docs/FUZZING.md.
@_spi(Fuzzing)
public enum VaultFuzzHarnesses {
    public static var all: [FuzzHarness] { [sealedEnvelope, vaultRequest, vaultAnswer, vaultConfiguration] }

    // MARK: Sealed envelope

    /// Fixed keys, so that every run (and every replayed input) sees the same realm.
    struct Fixture: Sendable {
        let realmID = RealmID(uncheckedBytes: Array(0x10..<0x20))
        let keys: [UInt32: XWingMLKEM768X25519.PrivateKey]
        let publicKey: RealmPublicKey
        let opener: ResponseOpener
        let sealer: ResponseSealer

        init() {
            func key(_ fill: UInt8) -> XWingMLKEM768X25519.PrivateKey {
                // 32 fixed bytes are a valid X-Wing seed: this cannot fail.
                try! XWingMLKEM768X25519.PrivateKey(seedRepresentation: [UInt8](repeating: fill, count: 32), publicKey: nil)
            }
            keys = [1: key(0xA1), 2: key(0xA2)]
            publicKey = RealmPublicKey(id: 1, publicKey: keys[1]!.publicKey)
            let enc = [UInt8](repeating: 0x5E, count: VaultChannel.encapsulatedKeySize)
            let secret = SymmetricKey(data: [UInt8](repeating: 0x5C, count: 32))
            opener = ResponseOpener(encapsulatedKey: enc, secret: secret)
            sealer = ResponseSealer(encapsulatedKey: enc, secret: secret)
        }
    }
    static let fixture = Fixture()

    /// Input: a mode byte, then bytes. Mode `m`: the message type is `allCases[(m >> 2) % count]`;
    /// `m & 3` is 0 = the bytes are a sealed request arriving at the realm; 1 = a sealed answer
    /// arriving at the client; 2 = the bytes are a request body that is sealed for the realm and
    /// opened there (must come out unchanged, and not under another type), and an answer sealed
    /// back (must open to the same bytes, and not once altered); 3 = the key id of a request.
    public static let sealedEnvelope = FuzzHarness(
        name: "sealed-envelope",
        dictionary: [[0, 0, 0, 1], [0, 0, 0, 2], [0xFF, 0xFF, 0xFF, 0xFF]],
        seeds: {
            var seeds: [[UInt8]] = []
            for (i, type) in VaultMessageType.allCases.enumerated() {
                let body = [type.rawValue, 0, 3] + Array("abc".utf8)
                // A genuine sealed request for the fixture realm (mode 0): opens at the realm.
                if let sealed = try? VaultChannel.sealRequest(body: body, type: type, realmID: fixture.realmID, key: fixture.publicKey) {
                    seeds.append([UInt8(i << 2)] + sealed.request)
                }
                if let answer = try? fixture.sealer.seal([type.answerType, 1, 2, 3]) { seeds.append([UInt8(i << 2 | 1)] + answer) }
                seeds.append([UInt8(i << 2 | 2)] + body)
            }
            seeds.append([3, 0, 0, 0, 1])
            return seeds
        },
        run: { data throws(FuzzFinding) in
            guard let mode = data.first else { return .rejected }
            let types = VaultMessageType.allCases
            let type = types[Int(mode >> 2) % types.count]
            let bytes = Array(data.dropFirst())
            let f = fixture
            switch mode & 3 {
            case 0:
                guard let (body, _) = try? VaultChannel.openRequest(bytes, type: type, realmID: f.realmID, privateKeys: f.keys) else { return .rejected }
                // What the realm does next with an opened body.
                _ = try? VaultRequest.decode(body, type: type)
                return .accepted
            case 1:
                guard let answer = try? f.opener.open(bytes) else { return .rejected }
                _ = try? VaultAnswer.decode(answer, for: type)
                return .accepted
            case 2:
                let sealed: (request: [UInt8], opener: ResponseOpener)
                do { sealed = try VaultChannel.sealRequest(body: bytes, type: type, realmID: f.realmID, key: f.publicKey) } catch {
                    throw FuzzFinding("sealing a \(bytes.count)-byte \(type) body failed: \(error)")
                }
                let opened: (body: [UInt8], sealer: ResponseSealer)
                do { opened = try VaultChannel.openRequest(sealed.request, type: type, realmID: f.realmID, privateKeys: f.keys) } catch {
                    throw FuzzFinding("a request sealed for the realm did not open there: \(error)")
                }
                guard opened.body == bytes else { throw FuzzFinding("the realm opened other bytes than were sealed") }
                let other = types[(types.firstIndex(of: type)! + 1) % types.count]
                if (try? VaultChannel.openRequest(sealed.request, type: other, realmID: f.realmID, privateKeys: f.keys)) != nil {
                    throw FuzzFinding("a \(type) request opened as \(other)")
                }
                let otherRealm = RealmID(uncheckedBytes: Array(0x20..<0x30))
                if (try? VaultChannel.openRequest(sealed.request, type: type, realmID: otherRealm, privateKeys: f.keys)) != nil {
                    throw FuzzFinding("a request sealed for one realm opened at another")
                }
                let answer: [UInt8]
                do { answer = try opened.sealer.seal(bytes) } catch { throw FuzzFinding("sealing an answer failed: \(error)") }
                guard (try? sealed.opener.open(answer)) == bytes else { throw FuzzFinding("the client did not open its answer to the same bytes") }
                var altered = answer
                let i = Int(mode) % altered.count
                altered[i] ^= 0x01
                if (try? sealed.opener.open(altered)) != nil { throw FuzzFinding("an answer altered at byte \(i) still opened") }
                if (try? f.opener.open(answer)) != nil { throw FuzzFinding("an answer opened with another request's opener") }
                return .accepted
            default:
                guard let id = try? VaultChannel.keyID(ofRequest: bytes) else { return .rejected }
                guard bytes.count >= 4, id == bytes.prefix(4).reduce(0, { $0 << 8 | UInt32($1) }) else {
                    throw FuzzFinding("key id \(id) is not the request's first four bytes")
                }
                return .accepted
            }
        })

    // MARK: Message bodies

    /// Input: a type selector byte, a flags byte, then the body. Unless flag bit 0 is set, the body
    /// is cut or zero-padded to the type's padded size (so the fuzzer works on the fields, not on
    /// finding the one accepted length). An accepted body must decode to its own type and encode
    /// back to exactly the same bytes (the encoding is canonical).
    public static let vaultRequest = FuzzHarness(
        name: "vault-request",
        dictionary: wireDictionary,
        seeds: {
            var seeds: [[UInt8]] = []
            for (i, type) in VaultMessageType.allCases.enumerated() {
                let token = Array(sampleToken.utf8)
                let head: [UInt8] = [UInt8(i), 0, type.rawValue, UInt8(token.count >> 8), UInt8(token.count & 0xFF)] + token
                seeds.append(head)
                seeds.append(head + [UInt8](repeating: 0x01, count: 300) + VaultPolicy.default.bytes)
                seeds.append([UInt8(i), 0, type.rawValue, 0, 0])
            }
            return seeds
        },
        run: { data throws(FuzzFinding) in
            guard data.count >= 2 else { return .rejected }
            let types = VaultMessageType.allCases
            let type = types[Int(data[0]) % types.count]
            let body = shaped(Array(data.dropFirst(2)), size: type.requestPaddedSize, exact: data[1] & 1 == 1)
            let request: VaultRequest
            do { request = try VaultRequest.decode(body, type: type) } catch { return .rejected }
            guard request.type == type else { throw FuzzFinding("a \(type) body decoded as \(request.type)") }
            let again: [UInt8]
            do { again = try request.encode() } catch { throw FuzzFinding("a decoded \(type) request does not encode: \(error)") }
            guard again == body else { throw FuzzFinding("a \(type) request decoded from bytes that are not its canonical encoding") }
            return .accepted
        })

    /// Input as for ``vaultRequest``; the type selector names the request the answer is for.
    public static let vaultAnswer = FuzzHarness(
        name: "vault-answer",
        dictionary: wireDictionary,
        seeds: {
            var seeds: [[UInt8]] = []
            for (i, type) in VaultMessageType.allCases.enumerated() {
                seeds.append([UInt8(i), 0, type.answerType])
                seeds.append([UInt8(i), 0, type.answerType] + [UInt8](repeating: 0x01, count: 200))
                seeds.append([UInt8(i), 0, RealmErrorAnswer.typeByte, RealmErrorCode.unlockFailed.rawValue] + [UInt8](repeating: 0x07, count: 16) + [9])
            }
            // An active record's Q0 answer: state, version, policy, commitment, vk, attempts, ticket.
            let q0 = [VaultMessageType.q0.answerType, 1] + [UInt8](repeating: 1, count: 16) + VaultPolicy.default.bytes
                + [UInt8](repeating: 2, count: 64) + [10] + [UInt8](repeating: 4, count: 32)
            seeds.append([0, 0] + q0)
            return seeds
        },
        run: { data throws(FuzzFinding) in
            guard data.count >= 2 else { return .rejected }
            let types = VaultMessageType.allCases
            let type = types[Int(data[0]) % types.count]
            let body = shaped(Array(data.dropFirst(2)), size: type.answerPaddedSize, exact: data[1] & 1 == 1)
            let answer: VaultAnswer
            do { answer = try VaultAnswer.decode(body, for: type) } catch { return .rejected }
            let again: [UInt8]
            do { again = try answer.encode(for: type) } catch { throw FuzzFinding("a decoded answer to \(type) does not encode: \(error)") }
            guard again == body else { throw FuzzFinding("an answer to \(type) decoded from bytes that are not its canonical encoding") }
            return .accepted
        })

    static let sampleToken = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJjb2ZmZXItZGV2In0.c2lnbmF0dXJl"

    static let wireDictionary: [[UInt8]] = [
        VaultPolicy.default.bytes, [0x01, 15, 8, 4, 100], [0x01, 20, 8, 1, 1], [0x0C, 0x00], [0x0B, 0xFF],
        [RealmErrorAnswer.typeByte], [0, 0, 0, 0, 0, 0, 0, 1], [0xFF, 0xFF],
    ] + VaultMessageType.allCases.map { [$0.rawValue] } + VaultMessageType.allCases.map { [$0.answerType] }

    static func shaped(_ body: [UInt8], size: Int, exact: Bool) -> [UInt8] {
        if exact { return body }
        return body.count >= size ? Array(body.prefix(size)) : body + [UInt8](repeating: 0, count: size - body.count)
    }

    // MARK: vault.json and realm descriptors

    /// Input: a mode byte (even: `vault.json`; odd: a realm's descriptor), then JSON. An accepted
    /// configuration obeys every rule `validated()` states, and survives its own JSON round trip.
    public static let vaultConfiguration = FuzzHarness(
        name: "vault-config",
        dictionary: [#""tenant""#, #""threshold""#, #""realms""#, #""keys""#, #""publicKey""#, #""policy""#,
                     #""log2N""#, #""guessLimit""#, #""x""#, #""url""#, #""id""#, "http://", "https://",
                     "4294967296", "-1", "1e400", "255", "256", "null", "[]", "{}", #"\u0000"#].map { Array($0.utf8) },
        seeds: {
            let realms = (1...5).map { i in sampleRealmJSON(i) }
            let five = #"{"tenant":"coffer-dev","threshold":3,"realms":["# + realms.joined(separator: ",") + "]}"
            let one = #"{"tenant":"t","threshold":1,"policy":{"log2N":15,"r":8,"p":1,"guessLimit":5},"realms":["# + realms[0] + "]}"
            let descriptor = #"{"id":"00112233445566778899aabbccddeeff","url":"https://realm.example","keys":[{"id":7,"publicKey":"AAAA"}]}"#
            return [[0] + Array(five.utf8), [0] + Array(one.utf8), [1] + Array(descriptor.utf8)]
        },
        run: { data throws(FuzzFinding) in
            guard let mode = data.first else { return .rejected }
            let json = Data(data.dropFirst())
            if mode & 1 == 1 {
                guard let d = try? JSONDecoder().decode(RealmDescriptor.self, from: json) else { return .rejected }
                let again = try? JSONDecoder().decode(RealmDescriptor.self, from: JSONEncoder().encode(d))
                guard again == d else { throw FuzzFinding("a realm descriptor does not survive its JSON round trip") }
                return .accepted
            }
            guard let config = try? JSONDecoder().decode(VaultConfiguration.self, from: json),
                  let valid = try? config.validated() else { return .rejected }
            let n = valid.realms.count, t = valid.threshold
            guard (1...255).contains(n), (1...n).contains(t), 2 * t > n,
                  Set(valid.realms.map(\.id)).count == n, Set(valid.realms.map(\.x)).count == n,
                  valid.realms.allSatisfy({ $0.x >= 1 && !$0.keys.isEmpty }), !valid.tenant.isEmpty else {
                throw FuzzFinding("validated() passed a configuration that breaks its rules (n \(n), t \(t))")
            }
            guard let text = try? config.jsonData(), let again = try? JSONDecoder().decode(VaultConfiguration.self, from: text),
                  again == config, (try? again.validated()) != nil else {
                throw FuzzFinding("a valid configuration does not survive its JSON round trip")
            }
            return .accepted
        })

    static func sampleRealmJSON(_ i: Int) -> String {
        let key = try! XWingMLKEM768X25519.PrivateKey(seedRepresentation: [UInt8](repeating: UInt8(i), count: 32), publicKey: nil)
        let id = [UInt8](repeating: UInt8(i), count: 16).hexString
        return #"{"id":"\#(id)","url":"http://127.0.0.1:\#(7300 + i)","x":\#(i),"keys":[{"id":1,"publicKey":"\#(Data(key.publicKey.rawRepresentation).base64EncodedString())"}]}"#
    }
}
