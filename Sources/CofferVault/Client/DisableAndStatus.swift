#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Disable as a state machine with no I/O: Q0 (scope `delete`) for a ticket and the current
/// version, then a sealed delete with `expectedVersion` at every realm that holds a registration.
/// Effective once `n - t + 1` realms hold none (deleted now, or already empty).
public struct DisableMachine {
    public let configuration: ValidatedVaultConfiguration
    let tokens: [RealmID: String]
    private var targets: [RealmID: (Ticket, RecordVersion)] = [:]
    private var alreadyEmpty: [RealmID] = []
    public private(set) var problems: [RealmID: RealmProblem] = [:]

    public init(configuration: ValidatedVaultConfiguration, tokens: [RealmID: String]) {
        self.configuration = configuration
        self.tokens = tokens
    }

    mutating func note(_ id: RealmID, _ reason: String) {
        problems[id] = RealmProblem(realmID: id, url: configuration.realms.first { $0.id == id }?.baseURL ?? "?", reason: reason)
    }

    public mutating func q0Requests() -> [RealmID: VaultRequest] {
        var out = [RealmID: VaultRequest]()
        for r in configuration.realms {
            if let t = tokens[r.id] { out[r.id] = .q0(Q0Request(token: t)) } else { note(r.id, "no token") }
        }
        return out
    }

    public mutating func receiveQ0(_ replies: [RealmID: RealmReply]) throws(VaultError) -> [RealmID: VaultRequest] {
        for (id, reply) in replies {
            switch reply {
            case .success(.q0(let a)):
                if a.state == .none { alreadyEmpty.append(id) } else { targets[id] = (a.ticket, a.version) }
            case .success(.error(let e)): note(id, "refused: \(e)")
            case .success: note(id, "answered with the wrong message type")
            case .failure(let f): note(id, f.description)
            }
        }
        let reachable = targets.count + alreadyEmpty.count
        guard reachable >= configuration.effectiveQuorum else {
            throw .realmsUnavailable(down: configuration.realms.compactMap { problems[$0.id] },
                                     needed: configuration.effectiveQuorum - reachable)
        }
        if targets.isEmpty && alreadyEmpty.count == configuration.n { throw .notRegistered }
        var out = [RealmID: VaultRequest]()
        for (id, (ticket, version)) in targets {
            out[id] = .delete(DeleteRequest(token: tokens[id]!, ticket: ticket, expectedVersion: version))
        }
        return out
    }

    /// Counts realms that now hold nothing.
    public mutating func receiveDelete(_ replies: [RealmID: RealmReply]) throws(VaultError) -> DisableReport {
        var deleted = [RealmID]()
        for (id, reply) in replies {
            switch reply {
            case .success(.delete): deleted.append(id)
            case .success(.error(let e)) where e.code == .notRegistered: deleted.append(id)
            case .success(.error(let e)): note(id, "refused: \(e)")
            case .success: note(id, "answered with the wrong message type")
            case .failure(let f): note(id, f.description)
            }
        }
        let empty = Set(deleted + alreadyEmpty)
        guard empty.count >= configuration.effectiveQuorum else {
            throw .notEffective(operation: "disable", acknowledged: empty.count, needed: configuration.effectiveQuorum,
                                problems: configuration.realms.compactMap { problems[$0.id] })
        }
        let order = configuration.realms.map(\.id)
        return DisableReport(cleared: order.filter { empty.contains($0) },
                             remaining: order.filter { !empty.contains($0) }.map { id in
                                 problems[id] ?? RealmProblem(realmID: id, url: configuration.realms.first { $0.id == id }?.baseURL ?? "?", reason: "no answer")
                             })
    }
}

/// The result of a disable that took effect.
public struct DisableReport: Sendable, Equatable {
    /// Realms that hold no registration now.
    public var cleared: [RealmID]
    /// Realms that still might hold the record (unreachable): until the pending disable reaches
    /// them they may still answer the old password.
    public var remaining: [RealmProblem]
    /// Set when the pending disable could not be written on this device (why); nil otherwise.
    public var pendingNotSaved: String?

    /// True only when all `n` realms hold no record.
    public var complete: Bool { remaining.isEmpty }
}

/// What `status` found at one realm.
public struct RealmStatus: Sendable, Equatable {
    public enum State: Sendable, Equatable {
        case active(version: RecordVersion, attemptsLeft: Int)
        case locked(version: RecordVersion)
        case notRegistered
        case down(String)
    }
    public var realmID: RealmID
    public var url: String
    public var state: State
}

/// The vault's view of one account.
public struct VaultStatus: Sendable, Equatable {
    public var realms: [RealmStatus]
    /// The version held by at least `t` realms with identical records, if any.
    public var activeVersion: RecordVersion?
    /// Minimum guesses left over the active group.
    public var attemptsLeft: Int?
    /// Realms of the active group / realms needing repair (another or no version, but reachable).
    public var converged: [RealmID]
    public var stale: [RealmID]
    public var down: [RealmID]

    /// Summarises Q0 replies (pure).
    public static func from(_ replies: [RealmID: RealmReply], configuration: ValidatedVaultConfiguration) -> VaultStatus {
        var realms = [RealmStatus]()
        var groups = [[UInt8]: [RealmID]]()
        var left = [RealmID: Int]()
        var versions = [RealmID: RecordVersion]()
        for r in configuration.realms {
            let state: RealmStatus.State
            switch replies[r.id] {
            case .success(.q0(let a)):
                switch a.state {
                case .active:
                    state = .active(version: a.version, attemptsLeft: Int(a.attemptsLeft))
                    groups[a.version.bytes + a.policy!.bytes + a.commitment + a.verificationKey, default: []].append(r.id)
                    left[r.id] = Int(a.attemptsLeft)
                    versions[r.id] = a.version
                case .locked: state = .locked(version: a.version)
                case .none: state = .notRegistered
                }
            case .success(.error(let e)): state = .down("refused: \(e)")
            case .success: state = .down("answered with the wrong message type")
            case .failure(let f): state = .down(f.description)
            case nil: state = .down("no token")
            }
            realms.append(RealmStatus(realmID: r.id, url: r.baseURL, state: state))
        }
        let best = groups.values.max { $0.count < $1.count }
        let group = (best?.count ?? 0) >= configuration.threshold ? best! : []
        let down = realms.filter { if case .down = $0.state { return true } else { return false } }.map(\.realmID)
        return VaultStatus(realms: realms,
                           activeVersion: group.first.flatMap { versions[$0] },
                           attemptsLeft: group.isEmpty ? nil : RecoveryMachine.quorumAttemptsLeft(group.compactMap { left[$0] }, n: configuration.n, t: configuration.threshold),
                           converged: configuration.realms.map(\.id).filter { group.contains($0) },
                           stale: configuration.realms.map(\.id).filter { !group.contains($0) && !down.contains($0) },
                           down: down)
    }
}
