#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CofferCore

/// What ``VaultClient/readHeads(key:user:)`` found.
public struct AnchoredHeads: Sendable {
    /// Per slot (repository × writer), the valid head with the highest seq any answering realm listed.
    public var heads: [AnchoredHead]
    /// Realms that answered the head read.
    public var answered: Int
    /// Listed heads that did not open under this key (a lying realm, or heads sealed under an
    /// earlier key after a key rotation): ignored.
    public var ignored: Int
    /// Realms that did not answer, with the reason.
    public var down: [RealmProblem]

    /// The heads of one repository (hex id as the backup engine prints it), newest first.
    public func heads(repositoryIDHex: String) -> [AnchoredHead] {
        heads.filter { $0.repositoryIDHex == repositoryIDHex.lowercased() }.sorted { $0.time > $1.time }
    }
}

/// What ``VaultClient/storeHead(_:key:user:)`` achieved (it took effect: `n - t + 1` realms hold it).
public struct HeadStoreReport: Sendable {
    public var acknowledged: [RealmID]
    /// Realms that did not store it, with the reason.
    public var problems: [RealmProblem]
}

extension VaultClient {
    /// Reads the anchored backup heads at every realm (scope `head`) and keeps, per slot, the
    /// valid head with the highest seq. Needs `t` answers: a head stored at `n - t + 1` realms is
    /// then always among them, so a realm (or any `t - 1`) serving an older head cannot hide the newest.
    /// - Throws: ``VaultError/Code/realmsUnavailable`` with fewer than `t` answers.
    public func readHeads(key: BackupKey, user: String) async throws(VaultError) -> AnchoredHeads {
        let (answers, _, problems) = await headReads(user: user)
        guard answers.count >= configuration.threshold else {
            throw .realmsUnavailable(down: configuration.realms.compactMap { problems[$0.id] },
                                     needed: configuration.threshold - answers.count)
        }
        let keys = HeadKeys(key: key)
        var best: [[UInt8]: AnchoredHead] = [:]
        var ignored = 0
        for (_, answer) in answers {
            for listed in answer.heads {
                guard let head = keys.open(slotID: listed.slotID, sealed: listed.sealedHead) else {
                    ignored += 1
                    continue
                }
                if let cur = best[listed.slotID], cur.seq >= head.seq { continue }
                best[listed.slotID] = head
            }
        }
        let heads = best.values.sorted { ($0.repositoryIDHex, $0.writerIDHex) < ($1.repositoryIDHex, $1.writerIDHex) }
        return AnchoredHeads(heads: heads, answered: answers.count, ignored: ignored,
                             down: configuration.realms.compactMap { problems[$0.id] })
    }

    /// Stores `head` at every realm: a head read for a ticket, then a head write (sealed head,
    /// slot id, seq, write authenticator). Takes effect once `n - t + 1` realms hold it.
    /// - Throws: ``VaultError/Code/realmsUnavailable`` before writing when fewer than
    ///   `n - t + 1` realms answer the read; ``VaultError/Code/notEffective``
    ///   when fewer acknowledge the write (store it again later: a higher seq replaces it).
    @discardableResult
    public func storeHead(_ head: AnchoredHead, key: BackupKey, user: String) async throws(VaultError) -> HeadStoreReport {
        var (answers, tokens, problems) = await headReads(user: user)
        let quorum = configuration.effectiveQuorum
        guard answers.count >= quorum else {
            throw .realmsUnavailable(down: configuration.realms.compactMap { problems[$0.id] }, needed: quorum - answers.count)
        }
        let keys = HeadKeys(key: key)
        let slotID: [UInt8], sealed: [UInt8]
        do { (slotID, sealed) = try keys.seal(head) } catch {
            throw .realmFault(faulty: [], down: [])
        }
        var writes = [RealmID: VaultRequest]()
        for (id, answer) in answers {
            writes[id] = .headWrite(HeadWriteRequest(token: tokens[id]!, ticket: answer.ticket, slotID: slotID, seq: head.seq,
                                                     writeAuth: keys.writeAuth(realmID: id, slotID: slotID), sealedHead: sealed))
        }
        let replies = await transport.callAll(writes, realms: configuration.realms)
        var acked: [RealmID] = []
        for (id, reply) in replies {
            switch reply {
            case .success(.headWrite(let a)) where a.seq == head.seq: acked.append(id)
            case .success(.headWrite): note(&problems, id, "stored another seq")
            case .success(.error(let e)): note(&problems, id, "refused: \(e)")
            case .success: note(&problems, id, "answered with the wrong message type")
            case .failure(let f): note(&problems, id, f.description)
            }
        }
        let order = configuration.realms.map(\.id)
        guard acked.count >= quorum else {
            throw .notEffective(operation: "storing of the backup head", acknowledged: acked.count, needed: quorum,
                                problems: order.compactMap { problems[$0] })
        }
        return HeadStoreReport(acknowledged: order.filter { acked.contains($0) }, problems: order.compactMap { problems[$0] })
    }

    /// Head read at every realm: the answers, the tokens used (for the writes) and per-realm problems.
    private func headReads(user: String) async -> ([RealmID: HeadReadAnswer], [RealmID: String], [RealmID: RealmProblem]) {
        let tokens = await tokens(user: user, scope: .head)
        var problems = [RealmID: RealmProblem]()
        var requests = [RealmID: VaultRequest]()
        for realm in configuration.realms {
            if let t = tokens[realm.id] { requests[realm.id] = .headRead(HeadReadRequest(token: t)) } else { note(&problems, realm.id, "no token") }
        }
        var answers = [RealmID: HeadReadAnswer]()
        for (id, reply) in await transport.callAll(requests, realms: configuration.realms) {
            switch reply {
            case .success(.headRead(let a)): answers[id] = a
            case .success(.error(let e)): note(&problems, id, "refused: \(e)")
            case .success: note(&problems, id, "answered with the wrong message type")
            case .failure(let f): note(&problems, id, f.description)
            }
        }
        return (answers, tokens, problems)
    }

    private func note(_ problems: inout [RealmID: RealmProblem], _ id: RealmID, _ reason: String) {
        problems[id] = RealmProblem(realmID: id, url: configuration.realms.first { $0.id == id }?.baseURL ?? "?", reason: reason)
    }
}
