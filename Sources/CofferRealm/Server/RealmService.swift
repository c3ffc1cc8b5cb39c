import CofferVault
import Crypto
import Foundation
import Logging

/// A test hook: sees each request body right after it was decrypted (before decoding), so tests can
/// check what a realm ever learns. Never set in production.
public typealias RealmRequestObserver = @Sendable (_ type: VaultMessageType, _ body: [UInt8]) -> Void

/// One realm: keys, configuration, store, token verifier, metrics and the protocol logic that
/// turns a sealed request into a sealed answer. The HTTP layer (`RealmServer`) is a thin edge.
public final class RealmService: Sendable {
    public let keys: RealmKeys
    public let config: RealmConfig
    /// Everything the realm persists (SQLite by default, or PostgreSQL: ``RealmDatabase``).
    public let store: any RealmDatabase
    public let metrics: RealmMetrics
    public let realmID: RealmID
    let verifier: TokenVerifier
    let logger: Logger
    let privateKeys: [UInt32: XWingMLKEM768X25519.PrivateKey]
    let observer: RealmRequestObserver?
    let limiter: RequestLimiter
    let tokenRefusalLog: LogLimiter
    let now: @Sendable () -> Date

    /// Opens the realm in `directory` (key file, configuration, and the store `realm.json` names, or
    /// `store` when given: `coffer realm serve --store`).
    /// - Parameter now: the realm's clock (store lifetimes, rate limits, log limits); tests move it by hand.
    public convenience init(directory: RealmDirectory, store location: RealmStoreLocation? = nil, logger: Logger? = nil,
                            observer: RealmRequestObserver? = nil, now: @escaping @Sendable () -> Date = { Date() }) async throws {
        let (keys, config) = try directory.load()
        let where_ = try location ?? RealmStoreLocation.configured(config, directory: directory)
        let store = try await where_.open(keys: keys, config: config, logger: logger, now: now)
        do {
            try await self.init(keys: keys, config: config, store: store, logger: logger, observer: observer, now: now)
        } catch {
            await store.close()
            throw error
        }
    }

    public convenience init(keys: RealmKeys, config: RealmConfig, databaseURL: URL, logger: Logger? = nil,
                            observer: RealmRequestObserver? = nil, now: @escaping @Sendable () -> Date = { Date() }) async throws {
        // Opened through RealmStoreLocation (not `RealmStore(...)` inline in the delegation: Swift 6.3.1's
        // optimizer crashed on that in release builds).
        let store = try await RealmStoreLocation.sqlite(databaseURL).open(keys: keys, config: config, logger: logger, now: now)
        try await self.init(keys: keys, config: config, store: store, logger: logger, observer: observer, now: now)
    }

    /// A realm over an opened `store` (which it closes in ``close()``).
    public init(keys: RealmKeys, config: RealmConfig, store: any RealmDatabase, logger: Logger? = nil,
                observer: RealmRequestObserver? = nil, now: @escaping @Sendable () -> Date = { Date() }) async throws {
        self.keys = keys
        self.config = config
        self.realmID = try RealmID(bytes: Array(keys.realmID))
        let metrics = RealmMetrics()
        self.metrics = metrics
        self.store = MeasuredRealmDatabase(store, metrics: metrics)
        self.now = now
        let limits = config.effectiveLimits
        self.limiter = RequestLimiter(limits: limits, now: now)
        self.tokenRefusalLog = LogLimiter(perMinute: limits.refusedTokenLogLinesPerMinute, now: now)
        self.verifier = try await TokenVerifier(config: config, realmID: realmID)
        var l = logger ?? Logger(label: "coffer.realm")
        l[metadataKey: "realm"] = .string(keys.realmIDHex)
        self.logger = l
        self.privateKeys = Dictionary(uniqueKeysWithValues: keys.hpkeKeys.map { ($0.id, $0.privateKey) })
        self.observer = observer
    }

    /// The outcome of one sealed exchange.
    public enum Reply: Sendable {
        /// The request decrypted: this is the sealed answer (success or error), HTTP 200.
        case sealed([UInt8])
        /// The request did not decrypt: a bare 400 with no detail.
        case undecryptable
    }

    /// Handles one POSTed body for message type `type`.
    public func handle(type: VaultMessageType, request: [UInt8]) async -> Reply {
        let start = ContinuousClock.now
        defer {
            let d = ContinuousClock.now - start
            metrics.recordLatency(endpoint: type.description, nanoseconds: d.components.seconds * 1_000_000_000 + d.components.attoseconds / 1_000_000_000)
        }
        let opened: (body: [UInt8], sealer: ResponseSealer)
        do {
            opened = try VaultChannel.openRequest(request, type: type, realmID: realmID, privateKeys: privateKeys)
        } catch {
            metrics.undecryptable.increment()
            logger.debug("request did not decrypt", metadata: ["type": "\(type)"])
            return .undecryptable
        }
        observer?(type, opened.body)
        let requestID = RequestMark.id(ofSealedRequest: request, prefixLength: VaultChannel.keyIDSize + VaultChannel.encapsulatedKeySize)
        let answer = await answer(type: type, body: opened.body, requestID: requestID)
        if case .error(let e) = answer {
            metrics.refusals.increment()
            logger.debug("refused", metadata: ["type": "\(type)", "code": "\(e.code)"])
        }
        do {
            let encoded = try answer.encode(for: type)
            return .sealed(try opened.sealer.seal(encoded))
        } catch {
            // Encoding our own answer cannot fail for well-formed values; answer a sealed internal error.
            logger.error("could not encode an answer", metadata: ["type": "\(type)", "error": "\(error)"])
            let fallback = (try? VaultAnswer.error(RealmErrorAnswer(code: .internalError)).encode(for: type)) ?? []
            return .sealed((try? opened.sealer.seal(fallback)) ?? [])
        }
    }

    private func answer(type: VaultMessageType, body: [UInt8], requestID: Data) async -> VaultAnswer {
        let request: VaultRequest
        do {
            request = try VaultRequest.decode(body, type: type)
        } catch {
            return .error(RealmErrorAnswer(code: .malformed))
        }
        let token: VerifiedToken
        let tokenExpires: Date
        do {
            (token, tokenExpires) = try await verifier.verifyWithExpiry(request.token, for: type)
        } catch let e as TokenError {
            metrics.tokenRefusals.increment()
            // Rate-limited: a flood of bad tokens must not flood the operator's log.
            let (log, suppressed) = tokenRefusalLog.next()
            if suppressed > 0 {
                logger.info("token refusals not logged", metadata: ["count": "\(suppressed)", "perMinute": "\(tokenRefusalLog.perMinute)"])
            }
            if log { logger.info("token refused", metadata: ["type": "\(type)", "reason": "\(e)"]) }
            return .error(RealmErrorAnswer(code: e == .wrongScope ? .scopeNotAllowed : .badToken))
        } catch {
            metrics.tokenRefusals.increment()
            return .error(RealmErrorAnswer(code: .badToken))
        }
        do {
            // A replay of a request this realm already served is refused before any curve operation
            // (a read); the mark inserted with the request's first write closes the race with a
            // concurrent copy, and holds across restarts until the token (or single-use value) expires.
            if try await store.hasServed(requestID: requestID) { throw ReplayedRequest() }
            // Per-token and per-user limits, before any curve operation or durable write.
            guard limiter.admit(tokenKey: RequestLimiter.tokenKey(request.token),
                                userKey: store.recordKey(tenant: token.tenant, user: token.user)) else {
                metrics.busy.increment()
                return .error(RealmErrorAnswer(code: .busy))
            }
            let mark = RequestMark(id: requestID, expires: markExpiry(type: type, tokenExpires: tokenExpires))
            return try await RequestMark.$current.withValue(mark) {
                try await perform(request, token: token)
            }
        } catch is ReplayedRequest {
            metrics.replays.increment()
            return await replayAnswer(type: type, token: token)
        } catch let refusal as RealmRefusal {
            return await refusalAnswer(refusal, token: token)
        } catch let refusal as HeadRefusal {
            return .error(RealmErrorAnswer(code: Self.code(for: refusal)))
        } catch {
            logger.error("request failed", metadata: ["type": "\(type)", "error": "\(error)"])
            return .error(RealmErrorAnswer(code: .internalError))
        }
    }

    /// Until when a served request must be remembered: its token's expiry, or sooner when the
    /// request spends a single-use value that expires sooner (a ticket, pending id or challenge was
    /// issued before this request, so it is dead by now + its lifetime; a replay after that is
    /// refused by the dead value and changes nothing).
    func markExpiry(type: VaultMessageType, tokenExpires: Date) -> Date {
        let now = self.now()
        let valueLifetime: TimeInterval?
        switch type {
        case .q1, .delete, .headWrite: valueLifetime = store.limits.ticketLifetime
        case .r2: valueLifetime = store.limits.pendingLifetime
        case .q2: valueLifetime = store.limits.challengeLifetime
        case .q0, .r1, .headRead: valueLifetime = nil
        }
        guard let valueLifetime else { return tokenExpires }
        return min(tokenExpires, now.addingTimeInterval(valueLifetime))
    }

    /// A replay's answer: the refusal its spent single-use value would get (the request's
    /// encapsulation is single-use too). Nothing was done.
    private func replayAnswer(type: VaultMessageType, token: VerifiedToken) async -> VaultAnswer {
        logger.debug("replayed request refused", metadata: ["type": "\(type)"])
        switch type {
        case .headRead, .headWrite: return .error(RealmErrorAnswer(code: .badTicket))
        case .r2: return await refusalAnswer(.badPending, token: token)
        case .q2: return await refusalAnswer(.noChallenge, token: token)
        case .q0, .r1, .q1, .delete: return await refusalAnswer(.badTicket, token: token)
        }
    }

    private func audit(_ event: String, _ token: VerifiedToken, _ extra: Logger.Metadata = [:]) {
        var m: Logger.Metadata = ["event": .string(event), "user": .string(store.auditRef(tenant: token.tenant, user: token.user)),
                                  "tenant": .string(token.tenant)]
        m.merge(extra) { a, _ in a }
        logger.info("audit", metadata: m)
    }

    private func perform(_ request: VaultRequest, token: VerifiedToken) async throws -> VaultAnswer {
        let (tenant, user) = (token.tenant, token.user)
        switch request {
        case .q0:
            metrics.queries.increment()
            let (status, ticketBytes, destroyed) = try await store.query(tenant: tenant, user: user, scope: token.scope)
            if destroyed {
                metrics.lockouts.increment()
                audit("lock", token)
            }
            let ticket = try Ticket(bytes: ticketBytes)
            switch status {
            case .notRegistered:
                return .q0(.notRegistered(ticket: ticket))
            case .locked(let version):
                return .q0(.locked(version: try RecordVersion(bytes: version), ticket: ticket))
            case .active(let version, let policy, let commitment, let vk, let left):
                return .q0(Q0Answer(state: .active, version: try RecordVersion(bytes: version), policy: try VaultPolicy(bytes: policy),
                                    commitment: Array(commitment), verificationKey: Array(vk),
                                    attemptsLeft: UInt8(clamping: left), ticket: ticket))
            }

        case .r1(let m):
            let a = try await store.beginRegistration(tenant: tenant, user: user, blinded: Data(m.blindedElement))
            return .r1(R1Answer(pendingID: try PendingID(bytes: a.pendingID), evaluatedElement: Array(a.evaluatedElement),
                                proof: Array(a.proof), oprfPublicKey: Array(a.pk)))

        case .r2(let m):
            guard Int(m.policy.guessLimit) <= config.guessLimit else {
                return .error(RealmErrorAnswer(code: .policyRefused))
            }
            let outcome = try await store.completeRegistration(
                tenant: tenant, user: user, pendingID: Data(m.pendingID.bytes),
                expectedVersion: m.expectedVersion.isZero ? nil : Data(m.expectedVersion.bytes),
                fields: RegistrationFields(version: Data(m.version.bytes), c: Data(m.maskedShare), commitment: Data(m.commitment),
                                           vk: Data(m.verificationKey), sig: Data(m.signature), tag: Data(m.unlockTag),
                                           wrapped: Data(m.wrappedKey), policy: Data(m.policy.bytes),
                                           guessLimit: Int(m.policy.guessLimit)),
                replace: RealmStore.ReplaceAuthority(proof: Data(m.replaceProof), reset: token.scope == .reset))
            metrics.registrations.increment()
            switch outcome {
            case .reset(let count):
                metrics.resets.increment()
                audit("reset", token, ["resets": "\(count)"])
            case .proven:
                audit("register", token, ["replaced": "proven"])
            case .fresh:
                audit("register", token)
            }
            return .r2(R2Answer(version: m.version))

        case .q1(let m):
            let r = try await store.guess(tenant: tenant, user: user, ticket: Data(m.ticket.bytes),
                                          version: Data(m.version.bytes), blinded: Data(m.blindedElement))
            if !r.retried {
                metrics.guesses.increment()
                audit("guess", token, ["attemptsLeft": "\(r.answer.attemptsLeft)"])
            }
            let a = r.answer
            return .q1(Q1Answer(evaluatedElement: Array(a.evaluatedElement), proof: Array(a.proof), oprfPublicKey: Array(a.pk),
                                maskedShare: Array(a.c), signature: Array(a.sig), challenge: try Challenge(bytes: a.challenge),
                                attemptsLeft: UInt8(clamping: a.attemptsLeft)))

        case .q2(let m):
            let outcome = try await store.unlock(tenant: tenant, user: user, version: Data(m.version.bytes),
                                                 challenge: Data(m.challenge.bytes), proof: Data(m.unlockProof))
            switch outcome {
            case .unlocked(let wrapped):
                metrics.unlocks.increment()
                audit("unlock", token)
                return .q2(Q2Answer(wrappedKey: Array(wrapped)))
            case .wrongProof(let left):
                metrics.failedUnlocks.increment()
                return .error(RealmErrorAnswer(code: .unlockFailed, currentVersion: m.version, attemptsLeft: UInt8(clamping: left)))
            case .destroyed:
                metrics.failedUnlocks.increment()
                metrics.lockouts.increment()
                audit("lock", token)
                return .error(RealmErrorAnswer(code: .locked, currentVersion: m.version))
            }

        case .delete(let m):
            try await store.delete(tenant: tenant, user: user, ticket: Data(m.ticket.bytes), expectedVersion: Data(m.expectedVersion.bytes))
            metrics.deletions.increment()
            audit("delete", token)
            return .delete(DeleteAnswer(deletedVersion: m.expectedVersion))

        case .headRead:
            metrics.headReads.increment()
            let (ticket, heads) = try await store.readHeads(tenant: tenant, user: user)
            return .headRead(HeadReadAnswer(ticket: try Ticket(bytes: ticket), heads: heads))

        case .headWrite(let m):
            let seq = try await store.writeHead(tenant: tenant, user: user, ticket: Data(m.ticket.bytes), slotID: Data(m.slotID),
                                                seq: m.seq, writeAuth: Data(m.writeAuth), sealedHead: Data(m.sealedHead))
            metrics.headWrites.increment()
            audit("head", token)
            return .headWrite(HeadWriteAnswer(seq: seq))
        }
    }

    static func code(for refusal: HeadRefusal) -> RealmErrorCode {
        switch refusal {
        case .badTicket, .ticketReused: return .badTicket
        case .stale: return .staleHead
        case .tooManySlots: return .tooManyHeads
        case .authFailed: return .headAuthFailed
        }
    }

    private func refusalAnswer(_ refusal: RealmRefusal, token: VerifiedToken) async -> VaultAnswer {
        // Version-carrying refusals tell the client the current version (so it can resynchronise).
        let status = try? await store.peekStatus(tenant: token.tenant, user: token.user)
        var current = RecordVersion.zero
        switch status {
        case .active(let v, _, _, _, _)?, .locked(let v)?: current = (try? RecordVersion(bytes: v)) ?? .zero
        default: break
        }
        let code: RealmErrorCode
        switch refusal {
        case .notRegistered: code = .notRegistered
        case .locked, .noGuessesLeft: code = .locked
        case .destroyedNow:
            code = .locked
            metrics.lockouts.increment()
            audit("lock", token)
        case .versionMismatch: code = .versionMismatch
        case .badTicket, .ticketReused: code = .badTicket
        case .badPending: code = .badPending
        case .noChallenge: code = .badChallenge
        case .wrongProof: code = .unlockFailed
        case .badElement: code = .malformed
        case .replaceNotProven:
            code = .replaceNotProven
            metrics.replaceRefusals.increment()
            audit("replace-refused", token)
        }
        return .error(RealmErrorAnswer(code: code, currentVersion: current))
    }

    /// Closes the store (after the servers stopped: graceful shutdown lets in-flight requests finish first).
    public func close() async { await store.close() }

    /// The descriptor clients pin, with `url` as this realm's address.
    public func descriptor(url: String) -> RealmDescriptor { keys.descriptor(url: config.url ?? url) }
}
