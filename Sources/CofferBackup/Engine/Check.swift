import Foundation
import CofferCore
import CofferStorage

extension Engine {
    /// The local folder behind this repository, when it is one: only there can writes leave
    /// temporary files (an S3 object appears whole or not at all).
    var localFolder: LocalStorage? {
        if let l = storage as? LocalStorage { return l }
        return (storage as? PrefixedStorage)?.base as? LocalStorage
    }

    /// Temporary files of unfinished writes anywhere in the repository folder (none on S3).
    func temporaryFiles() throws(BackupError) -> [ObjectInfo] {
        guard let folder = localFolder else { return [] }
        do { return try folder.temporaryFiles() } catch { throw Self.storageError(error, doing: "listing temporary files") }
    }

    /// Conflict copies a syncing drive made of objects in the repository folder (none on S3 or WebDAV).
    func conflictCopies() throws(BackupError) -> [String] {
        guard let folder = localFolder else { return [] }
        do { return try folder.conflictCopies() } catch { throw Self.storageError(error, doing: "listing conflict copies") }
    }

    /// Walks every tree of `snapshots`, collecting the blobs they need. Problems (unreadable trees)
    /// are returned, not thrown; `needed` maps each blob to a snapshot that needs it.
    func collectNeeded(_ snapshots: [(ObjectID, Snapshot)]) async -> (needed: [ChunkID: ObjectID], trees: Int, problems: [BackupError]) {
        var needed: [ChunkID: ObjectID] = [:]
        var visited = Set<ChunkID>()
        var problems: [BackupError] = []
        var trees = 0
        for (sid, snap) in snapshots {
            var stack = [snap.root]
            needed[snap.root] = needed[snap.root] ?? sid
            while let t = stack.popLast() {
                guard visited.insert(t).inserted else { continue }
                let tree: Tree
                do { tree = try await readTree(t) } catch {
                    var e = error
                    e.message = "tree \(t.hex) of snapshot \(sid.hex.prefix(8)): \(error.message)"
                    if e.object == nil || e.code == .dataMissing { e.object = "blob \(t.hex) (tree)" }
                    problems.append(e)
                    continue
                }
                trees += 1
                for n in tree.nodes {
                    switch n.kind {
                    case .file:
                        for c in n.content where needed[c] == nil { needed[c] = sid }
                    case .directory:
                        if let s = n.subtree {
                            if needed[s] == nil { needed[s] = sid }
                            stack.append(s)
                        }
                    case .symlink, .fifo:
                        break
                    }
                }
            }
        }
        return (needed, trees, problems)
    }

    func check(readData: Bool, progress: (@Sendable (WorkProgress) -> Void)? = nil) async throws(BackupError) -> CheckReport {
        var report = CheckReport()
        let started = ContinuousClock.now
        func problem(_ e: BackupError, kind: CheckProblem.Kind? = nil) {
            let k = kind ?? (e.code == .dataMissing ? .missing : .damaged)
            report.problems.append(CheckProblem(kind: k, object: e.object ?? "?", detail: e.message))
        }
        // Index (fresh, tolerant of damage).
        try await loadIndex(useCache: false)
        let state = index.withLock { $0 }
        for e in state.damagedIndexObjects { problem(e) }
        report.indexObjectsChecked = state.indexObjects.count + state.damagedIndexObjects.count

        // Snapshots, one by one.
        var snaps: [(ObjectID, Snapshot)] = []
        for info in try await listObjects("snapshots/") {
            guard let id = Self.objectID(fromName: info.name, prefix: "snapshots/") else { continue }
            do {
                let plain = try await readSealed(info.name, id: id, type: .snapshot)
                snaps.append((id, try Snapshot.decode(plain, what: info.name)))
            } catch let e as BackupError {
                if e.code == .storage { throw e }
                problem(e)
            } catch {
                problem(BackupError(.dataDamaged, object: info.name, message: "\(info.name) is damaged: \(error)"))
            }
        }
        report.snapshotsChecked = snaps.count

        // Trees and the blobs they need.
        let (needed, trees, treeProblems) = await collectNeeded(snaps)
        report.treesChecked = trees
        for e in treeProblems { problem(e) }
        let reported = Set(report.problems.map(\.object))
        for (blob, sid) in needed.sorted(by: { $0.key < $1.key }) where state.blobs[blob] == nil {
            let name = "blob \(blob.hex)"
            if reported.contains(name) || reported.contains(name + " (tree)") { continue }
            report.problems.append(CheckProblem(kind: .missing, object: name,
                                                detail: "blob \(blob.hex) needed by snapshot \(sid.hex.prefix(8)) is in no index (its pack is missing or unindexed)"))
        }

        // Packs: present, right size, header agrees with the index.
        let listed = try await listObjects("data/")
        var sizes: [ObjectID: Int] = [:]
        for info in listed {
            guard let id = Self.objectID(fromName: info.name, prefix: "data/") else { continue }
            sizes[id] = info.size
            if state.packs[id] == nil && !state.condemned.contains(id) { report.unindexedPacks.append(info.name) }
        }
        let opener = BlobOpener(keys: keys)
        let packTotal = state.packs.count
        let byteTotal = state.packs.values.reduce(Int64(0)) { $0 + Int64($1.length) }
        var bytesDone: Int64 = 0
        for (id, pack) in state.packs.sorted(by: { $0.key < $1.key }) {
            report.packsChecked += 1
            defer {
                bytesDone += Int64(pack.length)
                progress?(WorkProgress(step: readData ? "reading packs" : "reading pack headers", unit: "packs", done: report.packsChecked,
                                       total: packTotal, bytesDone: bytesDone, bytesTotal: byteTotal, elapsed: ContinuousClock.now - started))
            }
            guard let size = sizes[id] else {
                report.problems.append(CheckProblem(kind: .missing, object: id.packName, detail: "pack \(id.packName) listed in the index does not exist"))
                continue
            }
            guard size == pack.length else {
                report.problems.append(CheckProblem(kind: .damaged, object: id.packName,
                                                    detail: "pack \(id.packName) is \(size) bytes, the index says \(pack.length)"))
                continue
            }
            if readData {
                let bytes: Data
                do { bytes = try await objects.get(id.packName, doing: "reading \(id.packName)") } catch {
                    problem(error)
                    continue
                }
                guard id.verify(bytes) else {
                    report.problems.append(CheckProblem(kind: .damaged, object: id.packName,
                                                        detail: "pack \(id.packName) is damaged: its contents do not match its name"))
                    // Still name the damaged blobs inside it.
                    for e in pack.entries {
                        do { _ = try opener.open(blob: e, inPack: bytes, salt: pack.salt) } catch {
                            report.problems.append(CheckProblem(kind: .damaged, object: "blob \(e.id.hex)",
                                                                detail: "blob \(e.id.hex) in \(id.packName) is damaged: \(error.message)"))
                        }
                    }
                    continue
                }
                do {
                    let header = try PackHeader(pack: bytes, keys: keys)
                    if header.entries != pack.entries || header.salt != pack.salt {
                        report.problems.append(CheckProblem(kind: .damaged, object: id.packName,
                                                            detail: "the index does not match the header of pack \(id.packName)"))
                    }
                } catch {
                    report.problems.append(CheckProblem(kind: .damaged, object: id.packName, detail: "pack \(id.packName) header: \(error.message)"))
                }
                for e in pack.entries {
                    do {
                        _ = try opener.open(blob: e, inPack: bytes, salt: pack.salt)
                        report.blobsVerified += 1
                    } catch {
                        report.problems.append(CheckProblem(kind: .damaged, object: "blob \(e.id.hex)",
                                                            detail: "blob \(e.id.hex) in \(id.packName) is damaged: \(error.message)"))
                    }
                }
            } else {
                do {
                    let header = try await readPackHeader(id, size: size)
                    if header.entries != pack.entries || header.salt != pack.salt {
                        report.problems.append(CheckProblem(kind: .damaged, object: id.packName,
                                                            detail: "the index does not match the header of pack \(id.packName)"))
                    }
                } catch {
                    problem(error)
                }
            }
        }
        report.unindexedPacks.sort()
        report.temporaryFiles = try temporaryFiles().map(\.name).sorted()
        report.conflictCopies = try conflictCopies()
        return report
    }
}
