import CofferVault
import Foundation

/// A raw protocol client for tests and benchmarks: seals one message for a realm and opens the
/// answer. No flow logic (that is the vault client's); it lets a test send exactly what it wants,
/// malformed or replayed messages included.
public struct RealmProbe: Sendable {
    public let realmID: RealmID
    public let key: RealmPublicKey

    public init(descriptor: RealmDescriptor) throws {
        guard let id = RealmID(hex: descriptor.id), let k = descriptor.keys.first else {
            throw RealmFileError(path: "", message: "descriptor without id or key")
        }
        self.realmID = id
        self.key = try k.realmPublicKey()
    }

    public init(realmID: RealmID, key: RealmPublicKey) {
        self.realmID = realmID
        self.key = key
    }

    /// The sealed request bytes to POST, and the opener for its answer.
    public func seal(_ request: VaultRequest) throws -> (bytes: [UInt8], opener: ResponseOpener) {
        let body = try request.encode()
        let sealed = try VaultChannel.sealRequest(body: body, type: request.type, realmID: realmID, key: key)
        return (sealed.request, sealed.opener)
    }

    /// Seals an arbitrary body (tests: malformed plaintexts that still decrypt).
    public func seal(rawBody: [UInt8], type: VaultMessageType) throws -> (bytes: [UInt8], opener: ResponseOpener) {
        let sealed = try VaultChannel.sealRequest(body: rawBody, type: type, realmID: realmID, key: key)
        return (sealed.request, sealed.opener)
    }

    /// Opens and decodes an answer to a request of `type`.
    public func open(_ response: [UInt8], opener: ResponseOpener, type: VaultMessageType) throws -> VaultAnswer {
        try VaultAnswer.decode(try opener.open(response), for: type)
    }

    /// One exchange with an in-process realm (no HTTP).
    public func exchange(_ request: VaultRequest, with service: RealmService) async throws -> VaultAnswer {
        let (bytes, opener) = try seal(request)
        switch await service.handle(type: request.type, request: bytes) {
        case .undecryptable: throw RealmFileError(path: "", message: "the realm could not decrypt the request")
        case .sealed(let answer): return try open(answer, opener: opener, type: request.type)
        }
    }
}
