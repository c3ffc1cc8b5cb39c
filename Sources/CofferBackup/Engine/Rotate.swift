import Foundation
import CofferCore
import CofferStorage

// Key rotation: a new backup key K' and repository id R', every live snapshot re-encrypted into a
// new generation under gen/<R'>/, committed by replacing the root `config`. The design and its
// crash-safety argument are in docs/KEY-ROTATION.md.

extension SealedObjectType {
    /// `rotation/<R'>` (under K'): the staged generation R' is complete; holds the config to commit.
    static let rotationRecord = SealedObjectType(rawValue: 16)
    /// `retired/<R>` (under the old K): this key was replaced by repository R'.
    static let retiredKey = SealedObjectType(rawValue: 17)
}

/// Plaintext of `rotation/<new id>`.
struct RotationRecord: Sendable {
    static let magic = "CFRR"
    static let version: UInt16 = 1
    /// The generation being replaced (16 bytes) and its feature flags (where its objects live).
    var oldRepositoryID: [UInt8]
    var oldFeatureFlags: UInt32
    var timeSec: Int64
    /// The new generation's config object, exactly the bytes that replace the root `config`.
    var config: [UInt8]

    func encoded() -> [UInt8] {
        var w = WireWriter()
        w.raw(Array(Self.magic.utf8))
        w.u16(Self.version)
        w.u16(0)
        w.raw(oldRepositoryID)
        w.u32(oldFeatureFlags)
        w.i64(timeSec)
        w.lp16(config)
        return w.bytes
    }

    static func decode(_ bytes: [UInt8], what: String) throws(WireError) -> RotationRecord {
        var r = WireReader(bytes, what: what)
        try r.expectMagic(magic, version: version)
        let old = Array(try r.take(16))
        let flags = try r.u32()
        let t = try r.i64()
        let config = try r.bytes16()
        try r.expectEnd()
        return RotationRecord(oldRepositoryID: old, oldFeatureFlags: flags, timeSec: t, config: config)
    }
}

/// Plaintext of `retired/<old id>`.
struct RetiredKeyRecord: Sendable {
    static let magic = "CFRK"
    static let version: UInt16 = 1
    var newRepositoryID: [UInt8]
    var timeSec: Int64

    func encoded() -> [UInt8] {
        var w = WireWriter()
        w.raw(Array(Self.magic.utf8))
        w.u16(Self.version)
        w.u16(0)
        w.raw(newRepositoryID)
        w.i64(timeSec)
        return w.bytes
    }

    static func decode(_ bytes: [UInt8], what: String) throws(WireError) -> RetiredKeyRecord {
        var r = WireReader(bytes, what: what)
        try r.expectMagic(magic, version: version)
        let id = Array(try r.take(16))
        let t = try r.i64()
        try r.expectEnd()
        return RetiredKeyRecord(newRepositoryID: id, timeSec: t)
    }
}

/// The device's record of a rotation it started (`$COFFER_HOME/rotations/<old id>.json`, 0600).
/// The new key itself is in `keys/<new id>.key`, written before this file.
struct RotationJob: Codable, Sendable {
    var oldRepositoryID: String
    var newRepositoryID: String
    var started: Date

    static func url(_ store: DeviceKeyStore, oldRepositoryID: String) -> URL {
        store.home.appendingPathComponent("rotations", isDirectory: true).appendingPathComponent("\(oldRepositoryID).json")
    }

    static func load(_ store: DeviceKeyStore, oldRepositoryID: String) -> RotationJob? {
        guard let data = try? Data(contentsOf: url(store, oldRepositoryID: oldRepositoryID)) else { return nil }
        let dec = JSONDecoder()
        dec.dateDecodingStrategy = .iso8601
        return try? dec.decode(RotationJob.self, from: data)
    }

    func save(_ store: DeviceKeyStore) throws {
        let enc = JSONEncoder()
        enc.dateEncodingStrategy = .iso8601
        try DeviceKeyStore.writePrivateFile(try enc.encode(self), to: Self.url(store, oldRepositoryID: oldRepositoryID))
    }
}

/// What ``KeyRotation/rotate(storage:key:deviceStore:beforeCommit:progress:)`` did.
public struct KeyRotationReport: Sendable {
    /// The repository id before (32 hex digits) and after the rotation.
    public var oldRepositoryID: String
    public var newRepositoryID: String
    /// The new backup key: show its 64 digits to the user once (it is also in the device key file).
    public var newKey: BackupKey
    /// Snapshots carried over into the new generation.
    public var snapshots: Int
    /// Blobs re-encrypted and bytes uploaded by this run (a resumed run skips what is staged).
    public var blobsWritten: Int
    public var bytesWritten: Int64
    /// Objects of the old generation deleted.
    public var oldObjectsDeleted: Int
    /// This run continued an interrupted rotation (staging or clean-up).
    public var resumed: Bool
}

/// Rotating the backup key (`coffer key rotate`): docs/KEY-ROTATION.md.
public enum KeyRotation {
    static let rotationPrefix = "rotation/"
    static let retiredPrefix = "retired/"

    /// Crash injection for the tests (``TestHooks``): the process kills itself (SIGKILL, as `kill -9`
    /// would) at that step. Steps: `job-saved` (the job record written, the new key not yet),
    /// `staged`, `recorded`, `registered` (after `beforeCommit`), `committed`, `cleaning` (half of
    /// the old generation deleted).
    static func crashPoint(_ step: String) { TestHooks.crashPoint(step) }

    /// The new key of a rotation this device started for repository `repositoryID` and has not
    /// committed yet, if any (a vault check accepts it as well as the current key).
    public static func pendingNewKey(repositoryID: String, deviceStore: DeviceKeyStore) -> BackupKey? {
        guard let job = RotationJob.load(deviceStore, oldRepositoryID: repositoryID) else { return nil }
        return try? deviceStore.loadKey(repositoryID: job.newRepositoryID)
    }

    /// True when this device started a rotation of `repositoryID` that is not finished: anything
    /// backed up to it now would not be carried over (the CLI refuses and says to finish it).
    public static func isUnfinished(repositoryID: String, deviceStore: DeviceKeyStore) -> Bool {
        FileManager.default.fileExists(atPath: RotationJob.url(deviceStore, oldRepositoryID: repositoryID).path)
    }

    /// Rotates the key of the repository on `storage`, or finishes an interrupted rotation.
    ///
    /// - Parameters:
    ///   - key: the key that opens the repository now (the old key, or the new one when an earlier
    ///     run already committed and only the clean-up is left).
    ///   - deviceStore: holds the new key (written before the commit), the job record, heads.
    ///   - beforeCommit: runs once the new generation is complete, before the commit point (the
    ///     CLI registers the new key in the vault here). If it throws, nothing is committed: the
    ///     repository still opens with the old key and a later run resumes.
    ///   - progress: one line per step, for the user.
    ///   - work: the re-encryption's progress (blobs read of those to read, stored bytes), for a live line.
    /// - Throws: ``BackupError``: `.wrongKey`, `.dataMissing`/`.dataDamaged` (the old generation
    ///   cannot be read whole: nothing is committed), `.staleRepository`, `.storage`, `.fileSystem`;
    ///   or what `beforeCommit` throws.
    public static func rotate(storage: any Storage, key: BackupKey, deviceStore: DeviceKeyStore,
                              beforeCommit: @Sendable (BackupKey, String) async throws -> Void = { _, _ in },
                              progress: @Sendable (String) -> Void = { _ in },
                              work: (@Sendable (WorkProgress) -> Void)? = nil) async throws -> KeyRotationReport {
        let repo = try await Repository.open(storage: storage, key: key, deviceStore: deviceStore)
        let rootID = repo.repositoryID

        // Committed earlier, clean-up left (this device or another one rolled it forward).
        if let record = try await readRotationRecord(storage: storage, newRepositoryID: rootID, key: key) {
            progress("finishing the rotation committed earlier: deleting the old generation")
            let deleted = try await cleanUp(storage: storage, record: record, newEngine: repo.engine, deviceStore: deviceStore)
            return KeyRotationReport(oldRepositoryID: Hex.string(record.oldRepositoryID), newRepositoryID: rootID, newKey: key,
                                     snapshots: try await repo.engine.loadSnapshots().count, blobsWritten: 0, bytesWritten: 0,
                                     oldObjectsDeleted: deleted, resumed: true)
        }

        // Staging: resume this device's job, or start one.
        var resumed = false
        var newKey = BackupKey()
        var newConfig: RepositoryConfig
        do {
            newConfig = try RepositoryConfig(parameters: repo.engine.config.parameters,
                                             featureFlags: RepositoryConfig.featureGenerationPrefix)
        } catch {
            throw BackupError(.invalidArgument, message: error.description, underlying: error)
        }
        if let job = RotationJob.load(deviceStore, oldRepositoryID: rootID),
           let k = try? deviceStore.loadKey(repositoryID: job.newRepositoryID),
           let idBytes = Hex.bytes(job.newRepositoryID), idBytes.count == 16 {
            newKey = k
            do {
                newConfig = try RepositoryConfig(repositoryID: Data(idBytes), parameters: repo.engine.config.parameters,
                                                 featureFlags: RepositoryConfig.featureGenerationPrefix)
            } catch {
                throw BackupError(.invalidArgument, message: error.description, underlying: error)
            }
            resumed = true
            progress("resuming the rotation started \(job.started): new repository id \(job.newRepositoryID)")
        }
        let newID = Hex.string(newConfig.repositoryID)
        if !resumed {
            // The job record (ids only) first, then the new key (0600), both before anything is
            // written for it. In this order a kill between the two leaves a job without its key,
            // which the next run replaces (above, `resumed` stays false); in the other order it left
            // a key file that nothing referred to, kept on the device for ever.
            do {
                try RotationJob(oldRepositoryID: rootID, newRepositoryID: newID, started: Date()).save(deviceStore)
                crashPoint("job-saved")
                try deviceStore.saveKey(newKey, repositoryID: newID)
            } catch {
                throw BackupError(.fileSystem, message: "cannot save the new key on this device; nothing was changed: \(error)")
            }
            progress("new repository id \(newID); re-encrypting every snapshot into gen/\(newID)/")
        }

        let newKeys = newConfig.keys(for: newKey)
        let newEngine = Engine(storage: storage, keys: newKeys, config: newConfig, deviceStore: deviceStore)
        try await newEngine.loadIndex()
        if resumed {
            // Packs uploaded after the last checkpoint of the interrupted run are not indexed: the
            // copy writes their blobs again, so they go (only this job writes under gen/<R'>/).
            do {
                for info in try await newEngine.objects.rawList("data/") {
                    guard let id = Engine.objectID(fromName: info.name, prefix: "data/"), newEngine.salt(of: id) == nil else { continue }
                    try await newEngine.objects.rawDelete([info.name])
                }
            } catch {
                throw Engine.storageError(error, doing: "removing unindexed packs of the staged generation")
            }
        }
        let copier = GenerationCopier(old: repo.engine, new: newEngine)
        let snapshotCount = try await copier.copyAllSnapshots(progress: progress, work: work)
        crashPoint("staged")

        // The staged generation is complete: say so (record under K'), and leave the old key a note.
        let configBytes = [UInt8](newConfig.encoded(with: newKeys))
        let now = Int64(Date().timeIntervalSince1970)
        let oldConfig = repo.engine.config
        let record = RotationRecord(oldRepositoryID: [UInt8](oldConfig.repositoryID), oldFeatureFlags: oldConfig.featureFlags,
                                    timeSec: now, config: configBytes)
        try await put(storage, rotationPrefix + newID,
                      SealedObject.seal(type: .rotationRecord, plaintext: record.encoded(), keys: newKeys, compress: false))
        try await put(storage, retiredPrefix + rootID,
                      SealedObject.seal(type: .retiredKey, plaintext: RetiredKeyRecord(newRepositoryID: [UInt8](newConfig.repositoryID), timeSec: now).encoded(),
                                        keys: repo.engine.keys, compress: false))

        crashPoint("recorded")
        progress("new generation complete (\(snapshotCount) snapshots)")
        try await beforeCommit(newKey, newID)
        crashPoint("registered")

        // The commit point: one atomic replacement of the root config.
        progress("committing: the repository now opens with the new key only")
        try await put(storage, "config", Data(configBytes))
        crashPoint("committed")

        let deleted = try await cleanUp(storage: storage, record: record, newEngine: newEngine, deviceStore: deviceStore)
        return KeyRotationReport(oldRepositoryID: rootID, newRepositoryID: newID, newKey: newKey, snapshots: snapshotCount,
                                 blobsWritten: copier.blobsWritten, bytesWritten: copier.bytesWritten,
                                 oldObjectsDeleted: deleted, resumed: resumed)
    }

    static func put(_ storage: any Storage, _ name: String, _ data: Data) async throws(BackupError) {
        try await ObjectStore(storage: storage).put(name, data: data, doing: "writing \(name)")
    }

    /// The rotation record naming `newRepositoryID`, if present and authentic under `key`.
    static func readRotationRecord(storage: any Storage, newRepositoryID: String, key: BackupKey) async throws(BackupError) -> RotationRecord? {
        let name = rotationPrefix + newRepositoryID
        let bytes: Data
        do { bytes = try await ObjectStore(storage: storage).rawGet(name) } catch {
            if error.code == .notFound { return nil }
            throw Engine.storageError(error, doing: "reading \(name)")
        }
        guard let id = Hex.bytes(newRepositoryID) else { return nil }
        let keys = RepositoryKeys(key: key, repositoryID: Data(id))
        guard let plain = try? SealedObject.open(bytes, expecting: .rotationRecord, keys: keys),
              let record = try? RotationRecord.decode(Array(plain), what: name) else { return nil }
        return record
    }

    /// After the commit: heads for the new id, the old generation deleted (idempotent), then the
    /// record, the old key file, the old heads and the job. Returns how many old objects were deleted.
    static func cleanUp(storage: any Storage, record: RotationRecord, newEngine: Engine, deviceStore: DeviceKeyStore) async throws(BackupError) -> Int {
        let oldID = Hex.string(record.oldRepositoryID)
        let newID = newEngine.repositoryID
        newEngine.recordHeads(try await newEngine.loadSnapshots())
        let objects = ObjectStore(storage: storage)
        var names: [String]
        do {
            if record.oldFeatureFlags & RepositoryConfig.featureGenerationPrefix != 0 {
                names = try await objects.rawList(RepositoryConfig.generationPrefix(repositoryID: Data(record.oldRepositoryID))).map(\.name)
            } else {
                // The first generation lives at the root: everything but the config, the generations
                // and the rotation notes belongs to it.
                names = try await objects.rawList("").map(\.name).filter {
                    $0 != "config" && !$0.hasPrefix("gen/") && !$0.hasPrefix(rotationPrefix) && !$0.hasPrefix(retiredPrefix)
                }
            }
            // Sealed objects first (snapshots, index), packs last: an interrupted clean-up never
            // leaves an old snapshot whose data is gone (nobody can open it anyway, but check stays quiet).
            names.sort { ($0.contains("data/") ? 1 : 0, $0) < ($1.contains("data/") ? 1 : 0, $1) }
            var i = 0
            while i < names.count {
                let batch = Array(names[i..<min(names.count, i + 500)])
                try await objects.rawDelete(batch)
                i += batch.count
                if i >= names.count / 2 { crashPoint("cleaning") }
            }
            try await objects.rawDelete([rotationPrefix + newID])
        } catch {
            throw Engine.storageError(error, doing: "deleting the old generation")
        }
        // The old key is gone from this device only once nothing of its generation is needed.
        let fm = FileManager.default
        try? fm.removeItem(at: deviceStore.keyFileURL(repositoryID: oldID))
        try? fm.removeItem(at: deviceStore.heads.fileURL(repositoryID: oldID))
        try? fm.removeItem(at: RotationJob.url(deviceStore, oldRepositoryID: oldID))
        return names.count
    }

    /// Called by ``Repository/open(storage:key:deviceStore:)`` when `key` does not open the root
    /// config: a complete staged generation that `key` opens is committed (the rotation's commit,
    /// rolled forward: its vault registration may already name this key); a retired key gets a
    /// message saying it was replaced. Otherwise `original` is thrown.
    static func openAfterWrongKey(storage: any Storage, key: BackupKey, deviceStore: DeviceKeyStore?,
                                  original: BackupError) async throws(BackupError) -> Repository {
        let objects = ObjectStore(storage: storage)
        let staged = (try? await objects.rawList(rotationPrefix)) ?? []
        for info in staged {
            let hex = String(info.name.dropFirst(rotationPrefix.count))
            guard let record = try? await readRotationRecord(storage: storage, newRepositoryID: hex, key: key),
                  (try? RepositoryConfig.open(record.config, key: key)) != nil else { continue }
            // Only on top of the generation it replaces (never over a later one).
            guard let root = try? await Engine.readConfig(storage: storage), [UInt8](root.repositoryID) == record.oldRepositoryID else { continue }
            try await objects.put("config", data: Data(record.config), doing: "committing the staged key rotation")
            return try await Engine.open(storage: storage, key: key, deviceStore: deviceStore)
        }
        if let note = await retiredNote(storage: storage, key: key) {
            var e = original
            e.code = .keyReplaced
            e.message = note
            throw e
        }
        throw original
    }

    /// "This key was replaced" when a `retired/` note opens under `key`.
    static func retiredNote(storage: any Storage, key: BackupKey) async -> String? {
        let objects = ObjectStore(storage: storage)
        let notes = (try? await objects.rawList(retiredPrefix)) ?? []
        for info in notes {
            let hex = String(info.name.dropFirst(retiredPrefix.count))
            guard let id = Hex.bytes(hex), id.count == 16, let bytes = try? await objects.rawGet(info.name) else { continue }
            let keys = RepositoryKeys(key: key, repositoryID: Data(id))
            guard let plain = try? SealedObject.open(bytes, expecting: .retiredKey, keys: keys),
                  let r = try? RetiredKeyRecord.decode(Array(plain), what: info.name) else { continue }
            let when = Date(timeIntervalSince1970: Double(r.timeSec)).formatted(.iso8601)
            return "this key was replaced by a key rotation on \(when) and no longer opens this repository "
                + "(repository \(hex) is now \(Hex.string(r.newRepositoryID))). Use the new key: `coffer vault recover`, "
                + "or the 64 digits `coffer key rotate` printed"
        }
        return nil
    }

    /// When this device holds only a retired key for the repository on `storage` (its key files
    /// name an id that a `retired/` note replaced), the message to show; `nil` otherwise.
    public static func replacedDeviceKeyMessage(storage: any Storage, deviceStore: DeviceKeyStore) async -> String? {
        let notes = (try? await ObjectStore(storage: storage).rawList(retiredPrefix)) ?? []
        for info in notes {
            let hex = String(info.name.dropFirst(retiredPrefix.count))
            guard let key = try? deviceStore.loadKey(repositoryID: hex) else { continue }
            if let note = await retiredNote(storage: storage, key: key) { return "this device's key file \(hex).key: " + note }
        }
        return nil
    }
}

/// Copies the live snapshots of one generation into another: every blob read and verified under
/// the old keys, re-identified and re-encrypted under the new ones; trees rewritten bottom-up with
/// the new ids; snapshots rewritten with prev/parent mapped (writer ids and seqs kept).
final class GenerationCopier {
    let old: Engine
    let new: Engine
    let opener: BlobOpener
    /// Old blob id → new blob id.
    var map: [ChunkID: ChunkID] = [:]
    /// New ids written by this run (the staged index of an interrupted run covers the others).
    var written = Set<ChunkID>()
    var writer: PackWriter?
    var unindexed: [IndexedPack] = []
    var unindexedBytes = 0
    var blobsWritten = 0
    var bytesWritten: Int64 = 0
    /// Blobs read from the old side (each verified) and not known before; `onRead` hears each one's
    /// stored length (a copy's progress).
    var blobsRead = 0
    var onRead: ((Int) -> Void)?

    init(old: Engine, new: Engine) {
        self.old = old
        self.new = new
        self.opener = BlobOpener(keys: old.keys)
    }

    /// Identity of a snapshot across generations (its object id changes).
    static func identity(_ s: Snapshot) -> String {
        "\(Hex.string(s.writerID))/\(s.seq)/\(s.timeSec).\(s.timeNsec)"
    }

    /// Copies every snapshot of the old generation not yet staged; lists again at the end and
    /// copies newcomers (a backup that finished meanwhile), until none is left. Returns the count.
    func copyAllSnapshots(progress: (String) -> Void, work: (@Sendable (WorkProgress) -> Void)? = nil) async throws(BackupError) -> Int {
        let started = ContinuousClock.now
        var stagedIDs: [String: ObjectID] = [:]
        for (id, s) in try await new.loadSnapshots() { stagedIDs[Self.identity(s)] = id }
        var total = 0
        while true {
            let all = try await old.loadSnapshots()
            try old.verifyHeads(all, doing: "rotate the key of this repository")
            let byID = Dictionary(all.map { ($0.0, $0.1) }, uniquingKeysWith: { a, _ in a })
            let todo = all.filter { stagedIDs[Self.identity($0.1)] == nil }
            total = all.count
            if todo.isEmpty { break }
            if let work {
                let (blobs, bytes) = try await plan(todo.map(\.1.root))
                var done = 0
                var bytesDone: Int64 = 0
                onRead = { length in
                    done += 1
                    bytesDone += Int64(length)
                    work(WorkProgress(step: "re-encrypting", unit: "blobs", done: done, total: blobs, bytesDone: bytesDone,
                                      bytesTotal: bytes, elapsed: ContinuousClock.now - started))
                }
            }
            var roots: [ObjectID: ChunkID] = [:]
            for (n, (id, s)) in todo.enumerated() {
                roots[id] = try await tree(s.root)
                progress("re-encrypted snapshot \(n + 1) of \(todo.count) (\(id.hex.prefix(8)))")
            }
            try await flush()
            // Snapshots last, each after those it names (prev, parent), so the mapping exists.
            func write(_ id: ObjectID) async throws(BackupError) {
                guard let s = byID[id], stagedIDs[Self.identity(s)] == nil, let root = roots[id] else { return }
                func mapped(_ ref: ObjectID?) async throws(BackupError) -> ObjectID? {
                    guard let ref, let r = byID[ref] else { return nil }
                    if stagedIDs[Self.identity(r)] == nil { try await write(ref) }
                    return stagedIDs[Self.identity(r)]
                }
                var n = s
                n.prev = try await mapped(s.prev)
                n.parent = try await mapped(s.parent)
                n.root = root
                let (nid, _) = try await new.writeSealed(n.encoded(), type: .snapshot) { $0.snapshotName }
                stagedIDs[Self.identity(s)] = nid
            }
            for (id, _) in todo { try await write(id) }
        }
        return total
    }

    func tree(_ oldID: ChunkID) async throws(BackupError) -> ChunkID {
        if let m = map[oldID] { return m }
        let t = try await old.readTree(oldID)
        read(oldID)
        var nodes = t.nodes
        for i in nodes.indices {
            switch nodes[i].kind {
            case .file: nodes[i].content = try await content(nodes[i].content)
            case .directory: if let sub = nodes[i].subtree { nodes[i].subtree = try await tree(sub) }
            case .symlink, .fifo: break
            }
        }
        var nt = t
        nt.nodes = nodes
        let encoded = nt.encoded()
        let nid = new.keys.chunkID(of: encoded)
        try await add(nid, type: .tree, plaintext: Data(encoded), compress: true)
        map[oldID] = nid
        return nid
    }

    func content(_ ids: [ChunkID]) async throws(BackupError) -> [ChunkID] {
        var out: [ChunkID] = []
        out.reserveCapacity(ids.count)
        var i = 0
        while i < ids.count {
            if let m = map[ids[i]] {
                out.append(m)
                i += 1
                continue
            }
            let n = max(1, old.contiguousRun(ids[i...]))
            var plains: [Data] = []
            try await old.readBlobRun(ids[i..<(i + n)], opener: opener) { plains.append($0) }
            for (k, p) in plains.enumerated() {
                let oid = ids[i + k]
                if let m = map[oid] {
                    out.append(m)
                    continue
                }
                read(oid)
                let nid = new.keys.chunkID(of: p)
                let compress = (old.location(of: oid)?.entry.compression ?? .none) != .none
                try await add(nid, type: .data, plaintext: p, compress: compress)
                map[oid] = nid
                out.append(nid)
            }
            i += n
        }
        return out
    }

    func read(_ id: ChunkID) {
        blobsRead += 1
        onRead?(old.location(of: id)?.entry.length ?? 0)
    }

    func add(_ id: ChunkID, type: BlobType, plaintext: Data, compress: Bool) async throws(BackupError) {
        if written.contains(id) || new.location(of: id) != nil { return }
        let w = writer ?? PackWriter(keys: new.keys, parameters: new.config.parameters)
        writer = w
        do { try w.add(type: type, id: id, plaintext: plaintext, compress: compress && new.compresses) } catch {
            throw BackupError(.dataDamaged, message: "cannot re-encrypt blob: \(error)", underlying: error)
        }
        written.insert(id)
        blobsWritten += 1
        if w.byteCount >= new.config.parameters.targetPackSize { try await closePack() }
    }

    func closePack() async throws(BackupError) {
        guard let w = writer else { return }
        writer = nil
        guard w.blobCount > 0 else { return }
        let f = w.finish()
        let name = f.id.packName
        try await new.objects.create(name, data: f.bytes, id: f.id)
        TestHooks.crashPoint("rotate-pack")
        unindexed.append(IndexedPack(id: f.id, salt: f.salt, length: f.bytes.count, entries: f.entries))
        unindexedBytes += f.bytes.count
        bytesWritten += Int64(f.bytes.count)
        // Checkpoints as in a backup: an interrupted rotation resumes without uploading again.
        if unindexedBytes >= 64 << 20 { try await writeIndex() }
    }

    func writeIndex() async throws(BackupError) {
        guard !unindexed.isEmpty else { return }
        let (_, size) = try await new.writeSealed(IndexFile(supersedes: [], packs: unindexed).encoded(), type: .index) { $0.indexName }
        bytesWritten += Int64(size)
        unindexed = []
        unindexedBytes = 0
    }

    /// Every blob written so far is in an uploaded pack and an index object.
    func flush() async throws(BackupError) {
        try await closePack()
        try await writeIndex()
    }
}
