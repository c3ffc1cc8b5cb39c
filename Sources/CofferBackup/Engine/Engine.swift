#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Dispatch
import Synchronization
import CofferCore
import CofferStorage

/// Where one blob lives.
struct BlobLocation: Sendable, Hashable {
    var pack: ObjectID
    var entry: PackEntry
}

/// The index: every blob of every indexed pack (packs condemned by a prune mark are left out, so
/// backups upload their blobs again rather than depend on them). Blobs and packs live in the
/// device's memory-mapped cache (Index/), plus an in-memory delta of what this process indexed.
struct IndexState: Sendable {
    var blobs = BlobTable()
    var packs = PackTable()
    /// Index objects read (live ones; superseded ones are skipped).
    var indexObjects: Set<ObjectID> = []
    /// Packs listed by pending prune marks.
    var condemned: Set<ObjectID> = []
    /// Condemned packs that a live index object lists anyway (a backup indexed them after the mark).
    var condemnedButIndexed: [ObjectID: IndexedPack] = [:]
    /// Index objects that failed verification when loaded.
    var damagedIndexObjects: [BackupError] = []
    /// Index objects superseded by a newer complete index (deleted by the next prune).
    var supersededIndexObjects: Set<ObjectID> = []

    mutating func add(_ pack: IndexedPack) {
        packs.delta[pack.id] = pack
        blobs.addDelta(pack)
    }
}

/// The repository's working state (keys, config, index) behind ``Repository``.
final class Engine: Sendable {
    /// The storage (under the generation's prefix after a key rotation). The engine reads and
    /// writes it only through ``objects``.
    let storage: any Storage
    let objects: ObjectStore
    let keys: RepositoryKeys
    let config: RepositoryConfig
    let policy: ChunkingPolicy
    let deviceStore: DeviceKeyStore?
    let repositoryID: String
    let index = Mutex(IndexState())
    let snapshotCache = Mutex([ObjectID: Snapshot]())
    let treeCache = Mutex([ChunkID: Tree]())
    /// Heads learnt from outside the storage (the vault's anchored heads), checked with the device's.
    let adoptedHeads = Mutex([DeviceHead]())
    /// The device's index cache (memory-mapped runs; see Index/IndexCache.swift).
    let indexCache: IndexCache

    init(storage: any Storage, keys: RepositoryKeys, config: RepositoryConfig, deviceStore: DeviceKeyStore?) {
        // A key-rotated generation keeps its objects under gen/<id>/ (docs/KEY-ROTATION.md).
        self.storage = config.usesGenerationPrefix ? PrefixedStorage(base: storage, prefix: config.objectPrefix) : storage
        objects = ObjectStore(storage: self.storage)
        self.keys = keys
        self.config = config
        self.policy = ChunkingPolicy(parameters: config.parameters)
        self.deviceStore = deviceStore
        self.repositoryID = Hex.string(config.repositoryID)
        self.indexCache = IndexCache(deviceStore: deviceStore, repositoryIDHex: repositoryID, keys: keys)
    }

    /// The config allows compression of compressible blobs (database chunks, trees).
    var compresses: Bool { config.parameters.compression != .none }

    static func storageError(_ e: StorageError, doing what: String) -> BackupError {
        ObjectStore.error(e, doing: what)
    }

    // MARK: Opening

    static func readConfig(storage: any Storage) async throws(BackupError) -> UnverifiedConfig {
        let objects = ObjectStore(storage: storage)
        let bytes: Data
        do {
            bytes = try await objects.rawGet("config")
        } catch {
            if error.code == .notFound {
                throw BackupError(.notARepository, object: "config",
                                  message: "no Coffer repository at \(storage.location) (no config object); create one with init")
            }
            throw storageError(error, doing: "reading the repository config")
        }
        do {
            return try UnverifiedConfig(bytes)
        } catch {
            throw BackupError(.repositoryDamaged, object: "config", message: error.description, underlying: error)
        }
    }

    static func initialize(storage: any Storage, key: BackupKey, options: RepositoryOptions,
                           deviceStore: DeviceKeyStore?) async throws(BackupError) -> Repository {
        let objects = ObjectStore(storage: storage)
        if try await objects.stat("config", doing: "checking for an existing repository") != nil {
            throw BackupError(.alreadyInitialized, object: "config",
                              message: "\(storage.location) already holds a Coffer repository; nothing was changed")
        }
        let params = RepositoryParameters(fileChunkSize: options.fileChunkSize, sqliteGroupSize: options.sqliteGroupSize,
                                          targetPackSize: options.targetPackSize, padding: options.padding,
                                          paddingFloor: options.padding == .none ? 0 : options.paddingFloor)
        let config: RepositoryConfig
        do {
            config = try RepositoryConfig(parameters: params)
        } catch {
            throw BackupError(.invalidArgument, message: error.description, underlying: error)
        }
        let keys = config.keys(for: key)
        do {
            try await objects.rawCreate("config", data: config.encoded(with: keys))
        } catch {
            if error.code == .alreadyExists {
                throw BackupError(.alreadyInitialized, object: "config",
                                  message: "\(storage.location) already holds a Coffer repository; nothing was changed")
            }
            throw storageError(error, doing: "writing the repository config")
        }
        let engine = Engine(storage: storage, keys: keys, config: config, deviceStore: deviceStore)
        if let deviceStore {
            do { try deviceStore.saveKey(key, repositoryID: engine.repositoryID) } catch {
                throw BackupError(.fileSystem, message: "the repository was created but its key could not be saved on this device: \(error)")
            }
        }
        return Repository(storage: storage, repositoryID: engine.repositoryID, deviceStore: deviceStore, engine: engine)
    }

    static func open(storage: any Storage, key: BackupKey, deviceStore: DeviceKeyStore?) async throws(BackupError) -> Repository {
        let unverified = try await readConfig(storage: storage)
        let keys = RepositoryKeys(key: key, repositoryID: unverified.repositoryID)
        let config: RepositoryConfig
        do {
            config = try unverified.verify(with: keys)
        } catch {
            if error.code == .wrongKey {
                // One mistyped or swapped digit? The corrected key authenticates this very config.
                if let typo = unverified.locateTypo(in: key) {
                    var e = BackupError(.wrongKey, object: "config", message: "wrong key for this repository: \(typo)", underlying: error)
                    e.keyTypo = typo
                    throw e
                }
                // A rotation may have replaced this key, or staged a generation this key opens.
                return try await KeyRotation.openAfterWrongKey(storage: storage, key: key, deviceStore: deviceStore,
                    original: BackupError(.wrongKey, object: "config", message: error.description, underlying: error))
            }
            throw BackupError(.repositoryDamaged, object: "config", message: error.description, underlying: error)
        }
        let engine = Engine(storage: storage, keys: keys, config: config, deviceStore: deviceStore)
        try await engine.loadIndex()
        return Repository(storage: storage, repositoryID: engine.repositoryID, deviceStore: deviceStore, engine: engine)
    }

    static func readRepositoryID(storage: any Storage) async throws(BackupError) -> String {
        let u = try await readConfig(storage: storage)
        return Hex.string(u.repositoryID)
    }

    // MARK: Sealed objects

    /// Reads a sealed object, verifying its name hash and opening it.
    func readSealed(_ name: String, id: ObjectID, type: SealedObjectType) async throws(BackupError) -> [UInt8] {
        let bytes = try await objects.get(name, doing: "reading \(name)")
        guard id.verify(bytes) else {
            throw BackupError(.dataDamaged, object: name, message: "\(name) is damaged: its contents do not match its name")
        }
        do {
            return Array(try SealedObject.open(bytes, expecting: type, keys: keys))
        } catch {
            throw BackupError(.dataDamaged, object: name, message: "\(name) is damaged: \(error.message)", underlying: error)
        }
    }

    /// Seals and stores an object with a conditional create (never replaces an object); returns its id and size.
    @discardableResult
    func writeSealed(_ plaintext: [UInt8], type: SealedObjectType, name: (ObjectID) -> String) async throws(BackupError) -> (ObjectID, Int) {
        let bytes = SealedObject.seal(type: type, plaintext: plaintext, keys: keys, padding: padding)
        let id = ObjectID(hashing: bytes)
        try await objects.create(name(id), data: bytes, id: id)
        return (id, bytes.count)
    }

    static func objectID(fromName name: String, prefix: String) -> ObjectID? {
        guard name.hasPrefix(prefix) else { return nil }
        let last = name.split(separator: "/").last.map(String.init) ?? ""
        return ObjectID(hex: last)
    }

    func listObjects(_ prefix: String) async throws(BackupError) -> [ObjectInfo] {
        try await objects.list(prefix)
    }

    // MARK: Index

    /// Reads every prune mark, then the index through the device cache (only index objects the
    /// cache does not cover are read; `useCache: false` reads and verifies them all again).
    /// A damaged index object does not stop the open: the error names it (check reports it too).
    func loadIndex(useCache: Bool = true) async throws(BackupError) {
        var state = IndexState()
        for info in try await listObjects("marks/") {
            guard let id = Self.objectID(fromName: info.name, prefix: "marks/") else { continue }
            let plain = try await readSealed(info.name, id: id, type: .pruneMark)
            do {
                let m = try PruneMark.decode(plain, what: info.name)
                // Orphans too: a backup must not adopt a pack that a pending mark will delete.
                for p in m.packs { state.condemned.insert(p.id) }
                for o in m.orphans { state.condemned.insert(o) }
            } catch {
                throw BackupError(.dataDamaged, object: info.name, message: "\(info.name) is damaged: \(error)")
            }
        }
        try await loadIndexObjects(into: &state, useCache: useCache)
        index.withLock { $0 = state }
    }

    func location(of id: ChunkID) -> BlobLocation? {
        index.withLock { $0.blobs[id] }
    }

    func salt(of pack: ObjectID) -> Data? {
        index.withLock { $0.packs.salt(of: pack) }
    }

    // MARK: Blobs and trees

    /// Reads and verifies one blob (one ranged read of its pack).
    func readBlob(_ id: ChunkID, opener: BlobOpener? = nil) async throws(BackupError) -> Data {
        guard let loc = location(of: id), let salt = salt(of: loc.pack) else {
            throw BackupError(.dataMissing, object: "blob \(id.hex)", message: "blob \(id.hex) is not in the index: its data is missing")
        }
        let name = loc.pack.packName
        let window: (bytes: Data, start: Int)
        do { window = try await readAligned(loc.pack, covering: loc.entry.range) } catch {
            if error.code == .rangeNotSatisfiable {
                throw BackupError(.dataDamaged, object: name, message: "\(name) is damaged: shorter than its index says", underlying: error)
            }
            throw Self.storageError(error, doing: "reading blob \(id.hex) from \(name)")
        }
        guard let sealed = Self.slice(window.bytes, start: window.start, entry: loc.entry) else {
            throw BackupError(.dataDamaged, object: name, message: "\(name) is damaged: shorter than its index says")
        }
        do {
            return try (opener ?? BlobOpener(keys: keys)).open(sealed, entry: loc.entry, salt: salt)
        } catch {
            throw BackupError(.dataDamaged, object: name,
                              message: "blob \(id.hex) in \(name) is damaged: \(error.message)", underlying: error)
        }
    }

    /// How many of `ids` (from the first) are stored one after another in the same pack, within
    /// `maxBytes`: they can be read with one ranged read. At least 1.
    func contiguousRun(_ ids: ArraySlice<ChunkID>, maxBytes: Int = 4 << 20) -> Int {
        guard let first = ids.first else { return 0 }
        return index.withLock { state -> Int in
            guard let l0 = state.blobs[first] else { return 1 }
            var end = l0.entry.range.upperBound
            var n = 1
            var i = ids.index(after: ids.startIndex)
            while i < ids.endIndex, let l = state.blobs[ids[i]], l.pack == l0.pack, l.entry.offset == end,
                  l.entry.range.upperBound - l0.entry.offset <= maxBytes {
                end = l.entry.range.upperBound
                n += 1
                i = ids.index(after: i)
            }
            return n
        }
    }

    /// Reads and verifies blobs stored one after another in one pack (see ``contiguousRun(_:maxBytes:)``)
    /// with a single ranged read; each blob is still opened and verified on its own, and `body`
    /// receives the plaintexts in order. Errors name the blob and the pack as ``readBlob(_:opener:)`` does.
    func readBlobRun(_ ids: ArraySlice<ChunkID>, opener: BlobOpener,
                     _ body: (Data) throws(BackupError) -> Void) async throws(BackupError) {
        guard let firstID = ids.first else { return }
        var locs: [BlobLocation] = []
        locs.reserveCapacity(ids.count)
        for id in ids {
            guard let loc = location(of: id) else {
                throw BackupError(.dataMissing, object: "blob \(id.hex)", message: "blob \(id.hex) is not in the index: its data is missing")
            }
            locs.append(loc)
        }
        guard let salt = salt(of: locs[0].pack) else {
            throw BackupError(.dataMissing, object: "blob \(firstID.hex)", message: "blob \(firstID.hex) is not in the index: its data is missing")
        }
        let name = locs[0].pack.packName
        let start = locs[0].entry.offset
        let end = locs[locs.count - 1].entry.range.upperBound
        guard locs.allSatisfy({ $0.pack == locs[0].pack }), start <= end else {
            // Not one run after all (the index changed): one read per blob.
            for id in ids { try body(try await readBlob(id, opener: opener)) }
            return
        }
        let sealed: Data, base: Int
        do { (sealed, base) = try await readAligned(locs[0].pack, covering: start..<end) } catch {
            if error.code == .rangeNotSatisfiable {
                throw BackupError(.dataDamaged, object: name, message: "\(name) is damaged: shorter than its index says", underlying: error)
            }
            throw Self.storageError(error, doing: "reading blob \(firstID.hex) from \(name)")
        }
        for (id, loc) in zip(ids, locs) {
            let plain: Data
            do {
                plain = try sealed.withUnsafeBytes { (all) throws(FormatError) -> Data in
                    let lo = loc.entry.offset - base
                    guard lo >= 0, lo + loc.entry.length <= all.count else {
                        throw FormatError(.truncated, "stored blob lies outside the bytes read", object: "blob \(id.hex)")
                    }
                    return try opener.open(UnsafeRawBufferPointer(rebasing: all[lo..<(lo + loc.entry.length)]),
                                           entry: loc.entry, salt: salt)
                }
            } catch {
                let why = (error as? FormatError)?.message ?? "\(error)"
                throw BackupError(.dataDamaged, object: name, message: "blob \(id.hex) in \(name) is damaged: \(why)", underlying: error)
            }
            try body(plain)
        }
    }

    func readTree(_ id: ChunkID) async throws(BackupError) -> Tree {
        if let t = treeCache.withLock({ $0[id] }) { return t }
        let plain = try await readBlob(id)
        let t: Tree
        do { t = try Tree.decode(Array(plain), what: "tree \(id.hex)") } catch {
            throw BackupError(.dataDamaged, object: "blob \(id.hex)", message: "tree \(id.hex) is damaged: \(error)")
        }
        treeCache.withLock { $0[id] = t }
        return t
    }

    // MARK: Snapshots

    func loadSnapshots() async throws(BackupError) -> [(ObjectID, Snapshot)] {
        var out: [(ObjectID, Snapshot)] = []
        for info in try await listObjects("snapshots/") {
            guard let id = Self.objectID(fromName: info.name, prefix: "snapshots/") else { continue }
            if let s = snapshotCache.withLock({ $0[id] }) {
                out.append((id, s))
                continue
            }
            let plain = try await readSealed(info.name, id: id, type: .snapshot)
            let s: Snapshot
            do { s = try Snapshot.decode(plain, what: info.name) } catch {
                throw BackupError(.dataDamaged, object: info.name, message: "\(info.name) is damaged: \(error)")
            }
            snapshotCache.withLock { $0[id] = s }
            out.append((id, s))
        }
        out.sort { ($0.1.timeSec, $0.1.timeNsec, $0.0) < ($1.1.timeSec, $1.1.timeNsec, $1.0) }
        return out
    }

    static func info(_ id: ObjectID, _ s: Snapshot) -> SnapshotInfo {
        SnapshotInfo(id: id.hex, time: s.time, writerID: Hex.string(s.writerID), seq: s.seq, prev: s.prev?.hex,
                     hostname: s.hostname, paths: s.paths, tags: s.tags, summary: s.summary)
    }

    func snapshots() async throws(BackupError) -> [SnapshotInfo] {
        try await loadSnapshots().map { Self.info($0.0, $0.1) }
    }

    func resolve(_ selector: String, in all: [(ObjectID, Snapshot)]) throws(BackupError) -> (ObjectID, Snapshot) {
        let sel = selector.lowercased()
        if sel == "latest" {
            guard let last = all.last else {
                throw BackupError(.snapshotNotFound, message: "the repository has no snapshots yet")
            }
            return last
        }
        guard sel.count >= 4, sel.allSatisfy({ $0.isHexDigit }) else {
            throw BackupError(.snapshotNotFound, message: "\"\(selector)\" is not a snapshot id: give latest, or at least 4 hex digits of an id")
        }
        let matches = all.filter { $0.0.hex.hasPrefix(sel) }
        guard matches.count == 1 else {
            throw BackupError(.snapshotNotFound, message: matches.isEmpty
                              ? "no snapshot id starts with \(sel)" : "\(sel) matches \(matches.count) snapshots; give more digits")
        }
        return matches[0]
    }

    func snapshot(matching selector: String) async throws(BackupError) -> SnapshotInfo {
        let (id, s) = try resolve(selector, in: try await loadSnapshots())
        return Self.info(id, s)
    }

    // MARK: Device head

    /// Refuses when the repository shows an older head than this device has seen or the vault
    /// anchored (``adoptedHeads``), or hides the snapshot such a head names; then records the newest
    /// head of every writer (the device has now seen them).
    func verifyHeads(_ all: [(ObjectID, Snapshot)], doing what: String) throws(BackupError) {
        var heads: [DeviceHead]
        do { heads = try deviceStore?.heads.heads(repositoryID: repositoryID) ?? [] } catch {
            throw BackupError(.fileSystem, message: "\(error)")
        }
        heads += adoptedHeads.withLock { $0 }.filter { $0.repositoryID == repositoryID }
        for h in heads {
            let mine = all.filter { Hex.string($0.1.writerID) == h.writerID }
            let newest = mine.max { $0.1.seq < $1.1.seq }
            if let n = newest, n.1.seq > h.seq { continue }
            if let n = newest, n.1.seq == h.seq, n.0.hex == h.snapshotID { continue }
            throw Self.staleHeadError(h, newest: newest, doing: what)
        }
        recordHeads(all)
    }

    func recordHeads(_ all: [(ObjectID, Snapshot)]) {
        guard let deviceStore else { return }
        var newest: [String: (ObjectID, Snapshot)] = [:]
        for (id, s) in all {
            let w = Hex.string(s.writerID)
            if let cur = newest[w], cur.1.seq >= s.seq { continue }
            newest[w] = (id, s)
        }
        for (w, (id, s)) in newest {
            try? deviceStore.heads.record(DeviceHead(repositoryID: repositoryID, writerID: w, seq: s.seq, snapshotID: id.hex))
        }
    }
}
