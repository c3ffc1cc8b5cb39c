import Foundation
import CofferCore
import CofferStorage
import CofferPosix

// `forget` with restic's semantics (restic 0.14, `internal/restic/snapshot_policy.go` and
// `snapshot_group.go`): snapshots are grouped (host and paths by default), each group's snapshots are
// kept or removed by the policy on their own, newest first. On top of restic, Coffer always keeps each
// writer's newest snapshot: it anchors that writer's chain and the device heads (a forgotten newest
// snapshot would read as a rollback: docs/REPOSITORY-OBJECTS.md, "Device head").

/// How ``Repository/forget(policy:dryRun:)`` groups snapshots before applying the rules: snapshots
/// with the same values of the chosen fields form one group. Restic's `--group-by`.
public struct SnapshotGrouping: Sendable, Hashable {
    public var host: Bool
    public var paths: Bool
    public var tags: Bool

    public init(host: Bool = true, paths: Bool = true, tags: Bool = false) {
        self.host = host
        self.paths = paths
        self.tags = tags
    }

    /// Host and paths (restic's default).
    public static let `default` = SnapshotGrouping()
    /// Every snapshot in one group.
    public static let none = SnapshotGrouping(host: false, paths: false, tags: false)

    /// `host,paths,tags` in any order and combination; the empty string is one group for all.
    public init(parsing text: String) throws(BackupError) {
        self.init(host: false, paths: false, tags: false)
        for part in text.split(separator: ",", omittingEmptySubsequences: true) {
            switch part.trimmingCharacters(in: .whitespaces).lowercased() {
            case "host": host = true
            case "paths", "path": paths = true
            case "tags", "tag": tags = true
            case "": continue
            default:
                throw BackupError(.invalidArgument, message: "unknown group-by field \"\(part)\": use host, paths and tags, separated by commas (or nothing for one group)")
            }
        }
    }
}

/// A time span for ``ForgetPolicy/keepWithin``: years, months, days and hours, as restic's
/// `--keep-within 1y2m3d4h` (subtracted from the group's newest snapshot on the calendar).
public struct CalendarSpan: Sendable, Hashable, CustomStringConvertible {
    public var years: Int
    public var months: Int
    public var days: Int
    public var hours: Int

    public init(years: Int = 0, months: Int = 0, days: Int = 0, hours: Int = 0) {
        self.years = years
        self.months = months
        self.days = days
        self.hours = hours
    }

    /// `2y`, `6m`, `7d`, `12h` or a combination such as `1y6m` (restic's duration syntax).
    public init(parsing text: String) throws(BackupError) {
        self.init()
        let t = text.trimmingCharacters(in: .whitespaces).lowercased()
        var number = ""
        var seen = Set<Character>()
        func bad() -> BackupError {
            BackupError(.invalidArgument, message: "\"\(text)\" is not a duration: give numbers with units y, m, d, h, e.g. 7d, 1y6m, 36h")
        }
        for c in t {
            if c.isASCII, c.isNumber { number.append(c); continue }
            guard let n = Int(number), n <= 100_000, !seen.contains(c) else { throw bad() }
            seen.insert(c)
            number = ""
            switch c {
            case "y": years = n
            case "m": months = n
            case "d": days = n
            case "h": hours = n
            default: throw bad()
            }
        }
        guard number.isEmpty, !seen.isEmpty else { throw bad() }
    }

    public var isZero: Bool { years == 0 && months == 0 && days == 0 && hours == 0 }

    /// `1y6m`, as restic prints it (zero parts left out).
    public var description: String {
        let parts = [(years, "y"), (months, "m"), (days, "d"), (hours, "h")].filter { $0.0 != 0 }
        return parts.isEmpty ? "0h" : parts.map { "\($0.0)\($0.1)" }.joined()
    }
}

/// Which snapshots ``Repository/forget(policy:dryRun:)`` keeps (restic's `forget` policy). Snapshots
/// are grouped by ``groupBy``; in each group, a snapshot is kept when any rule keeps it. Snapshots
/// that the filters (``hosts``, ``tags``, ``paths``) do not select are left alone. The newest snapshot
/// of every writer is always kept (it anchors that writer's chain and the devices' heads). A policy
/// with no rule at all is rejected.
public struct ForgetPolicy: Sendable, Hashable {
    /// Keep the newest N snapshots.
    public var keepLast: Int? = nil
    /// Keep the newest snapshot of each of the last N hours / days / weeks / months / years
    /// that have snapshots (calendar of ``timeZone``; weeks are ISO weeks).
    public var keepHourly: Int? = nil
    public var keepDaily: Int? = nil
    public var keepWeekly: Int? = nil
    public var keepMonthly: Int? = nil
    public var keepYearly: Int? = nil
    /// Keep every snapshot made less than this long before the group's newest snapshot.
    public var keepWithin: CalendarSpan? = nil
    /// Keep every snapshot that has all the tags of any of these lists.
    public var keepTags: [[String]] = []

    /// How snapshots are grouped (host and paths by default).
    public var groupBy: SnapshotGrouping = .default
    /// Only snapshots of one of these hosts (all when empty).
    public var hosts: [String] = []
    /// Only snapshots that have all the tags of any of these lists (all when empty).
    public var tags: [[String]] = []
    /// Only snapshots whose paths include all of these (all when empty; relative ones are taken
    /// from the current directory, as backup records them).
    public var paths: [String] = []
    /// The calendar of the hourly ... yearly rules and of ``keepWithin`` (UTC unless set; the CLI
    /// uses the local time zone, as restic does).
    public var timeZone: TimeZone = TimeZone(identifier: "UTC")!

    public init(keepLast: Int? = nil, keepHourly: Int? = nil, keepDaily: Int? = nil, keepWeekly: Int? = nil,
                keepMonthly: Int? = nil, keepYearly: Int? = nil, keepWithin: CalendarSpan? = nil, keepTags: [[String]] = [],
                groupBy: SnapshotGrouping = .default, hosts: [String] = [], tags: [[String]] = [], paths: [String] = []) {
        self.keepLast = keepLast
        self.keepHourly = keepHourly
        self.keepDaily = keepDaily
        self.keepWeekly = keepWeekly
        self.keepMonthly = keepMonthly
        self.keepYearly = keepYearly
        self.keepWithin = keepWithin
        self.keepTags = keepTags
        self.groupBy = groupBy
        self.hosts = hosts
        self.tags = tags
        self.paths = paths
    }

    /// True when no rule is given (filters and grouping are not rules).
    public var isEmpty: Bool {
        keepLast == nil && keepHourly == nil && keepDaily == nil && keepWeekly == nil && keepMonthly == nil
            && keepYearly == nil && (keepWithin?.isZero ?? true) && keepTags.isEmpty
    }

    /// True when the filters select this snapshot.
    func selects(_ s: Snapshot) -> Bool {
        if !hosts.isEmpty, !hosts.contains(s.hostname) { return false }
        if !tags.isEmpty, !tags.contains(where: { Self.has(s.tags, all: $0) }) { return false }
        // Snapshots record absolute paths: a relative one means the folder from here, as for backup.
        if !paths.isEmpty, !paths.allSatisfy({ s.paths.contains(Posix.absolute($0)) }) { return false }
        return true
    }

    static func has(_ tags: [String], all wanted: [String]) -> Bool {
        wanted.allSatisfy { tags.contains($0) }
    }
}

/// One group of ``ForgetResult``: the fields it is grouped by (nil when not grouped by that field),
/// and its snapshots kept (with the reasons) and removed, newest first.
public struct ForgetGroup: Sendable, Hashable {
    public var host: String?
    public var paths: [String]?
    public var tags: [String]?
    public var kept: [KeptSnapshot]
    public var removed: [SnapshotInfo]

    public init(host: String?, paths: [String]?, tags: [String]?, kept: [KeptSnapshot], removed: [SnapshotInfo]) {
        self.host = host
        self.paths = paths
        self.tags = tags
        self.kept = kept
        self.removed = removed
    }
}

/// A kept snapshot and every rule that keeps it (`last snapshot`, `daily snapshot`, `within 0y0m7d0h`,
/// `has tags [a]`, `newest of its device`...).
public struct KeptSnapshot: Sendable, Hashable {
    public var snapshot: SnapshotInfo
    public var reasons: [String]

    public init(snapshot: SnapshotInfo, reasons: [String]) {
        self.snapshot = snapshot
        self.reasons = reasons
    }
}

/// The outcome of ``Repository/forget(policy:dryRun:)`` and ``Repository/forget(snapshots:dryRun:)``.
public struct ForgetResult: Sendable, Hashable {
    /// Every snapshot kept (of the selected ones), oldest first.
    public var kept: [SnapshotInfo]
    /// Every snapshot removed (or, in a dry run, that would be), oldest first.
    public var removed: [SnapshotInfo]
    /// Per group (one group for explicit ids), in a stable order.
    public var groups: [ForgetGroup]
    /// Stored bytes of the snapshot objects deleted (0 in a dry run).
    public var bytesFreed: Int64

    public init(kept: [SnapshotInfo], removed: [SnapshotInfo], groups: [ForgetGroup] = [], bytesFreed: Int64 = 0) {
        self.kept = kept
        self.removed = removed
        self.groups = groups
        self.bytesFreed = bytesFreed
    }
}

/// The pure part of forget: grouping and restic's `ApplyPolicy`, on snapshots sorted oldest first.
enum ForgetPlanner {
    struct Decision {
        var id: ObjectID
        var snapshot: Snapshot
        var reasons: [String]
        var keep: Bool { !reasons.isEmpty }
    }

    struct Group {
        var host: String?
        var paths: [String]?
        var tags: [String]?
        /// Newest first.
        var decisions: [Decision]
    }

    static let newestOfWriterReason = "newest of its device"

    /// Groups the snapshots the policy selects and decides each one.
    static func plan(_ policy: ForgetPolicy, all: [(ObjectID, Snapshot)]) -> [Group] {
        var newestOfWriter: [[UInt8]: (ObjectID, UInt64)] = [:]
        for (id, s) in all where (newestOfWriter[s.writerID]?.1 ?? 0) <= s.seq { newestOfWriter[s.writerID] = (id, s.seq) }
        let anchors = Set(newestOfWriter.values.map(\.0))

        struct Key: Hashable { var host: String?; var paths: [String]?; var tags: [String]? }
        var groups: [Key: [(ObjectID, Snapshot)]] = [:]
        for (id, s) in all where policy.selects(s) {
            let key = Key(host: policy.groupBy.host ? s.hostname : nil,
                          paths: policy.groupBy.paths ? s.paths.sorted() : nil,
                          tags: policy.groupBy.tags ? s.tags.sorted() : nil)
            groups[key, default: []].append((id, s))
        }
        var out: [Group] = []
        for (key, members) in groups {
            var decisions = apply(policy, newestFirst: Array(members.reversed()))
            for i in decisions.indices where anchors.contains(decisions[i].id) {
                decisions[i].reasons.append(newestOfWriterReason)
            }
            out.append(Group(host: key.host, paths: key.paths, tags: key.tags, decisions: decisions))
        }
        out.sort { sortKey($0) < sortKey($1) }
        return out
    }

    static func sortKey(_ g: Group) -> String {
        [g.host ?? "", (g.paths ?? []).joined(separator: "\u{1}"), (g.tags ?? []).joined(separator: "\u{1}")].joined(separator: "\u{0}")
    }

    /// restic's `ApplyPolicy` on one group, newest first (`newestFirst` must be sorted so).
    static func apply(_ policy: ForgetPolicy, newestFirst list: [(ObjectID, Snapshot)]) -> [Decision] {
        guard let latest = list.first?.1.time else { return [] }
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = policy.timeZone
        var iso = Calendar(identifier: .iso8601)
        iso.timeZone = policy.timeZone

        struct Bucket { var count: Int; var reason: String; var key: (Date, Int) -> Int; var last = Int.min }
        func comps(_ d: Date) -> DateComponents { calendar.dateComponents([.year, .month, .day, .hour], from: d) }
        var buckets: [Bucket] = [
            Bucket(count: policy.keepLast ?? 0, reason: "last snapshot") { _, nr in nr },
            Bucket(count: policy.keepHourly ?? 0, reason: "hourly snapshot") { d, _ in
                let c = comps(d); return c.year! * 1_000_000 + c.month! * 10_000 + c.day! * 100 + c.hour! },
            Bucket(count: policy.keepDaily ?? 0, reason: "daily snapshot") { d, _ in
                let c = comps(d); return c.year! * 10_000 + c.month! * 100 + c.day! },
            Bucket(count: policy.keepWeekly ?? 0, reason: "weekly snapshot") { d, _ in
                let c = iso.dateComponents([.yearForWeekOfYear, .weekOfYear], from: d); return c.yearForWeekOfYear! * 100 + c.weekOfYear! },
            Bucket(count: policy.keepMonthly ?? 0, reason: "monthly snapshot") { d, _ in
                let c = comps(d); return c.year! * 100 + c.month! },
            Bucket(count: policy.keepYearly ?? 0, reason: "yearly snapshot") { d, _ in comps(d).year! },
        ]

        // restic: latest.AddDate(-years, -months, -days).Add(-hours); kept when strictly after.
        var withinLimit: Date?
        if let w = policy.keepWithin, !w.isZero {
            // Go's AddDate: year and month moved on the wall clock, the day then normalised (31 March
            // minus one month is 3 March), so build from the 1st and add the days.
            var c = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second, .nanosecond], from: latest)
            let months = c.year! * 12 + (c.month! - 1) - w.years * 12 - w.months
            let day = c.day!
            c.year = months >= 0 ? months / 12 : (months - 11) / 12
            c.month = months - c.year! * 12 + 1
            c.day = 1
            if let first = calendar.date(from: c), let shifted = calendar.date(byAdding: .day, value: day - 1 - w.days, to: first) {
                withinLimit = shifted.addingTimeInterval(-3600 * Double(w.hours))
            }
        }

        var out: [Decision] = []
        for (nr, (id, s)) in list.enumerated() {
            var reasons: [String] = []
            for l in policy.keepTags where ForgetPolicy.has(s.tags, all: l) {
                reasons.append("has tags [\(l.joined(separator: " "))]")
            }
            if let withinLimit, let w = policy.keepWithin, s.time > withinLimit {
                reasons.append("within \(w)")
            }
            for i in buckets.indices where buckets[i].count > 0 {
                let v = buckets[i].key(s.time, nr)
                if v != buckets[i].last {
                    buckets[i].last = v
                    buckets[i].count -= 1
                    reasons.append(buckets[i].reason)
                }
            }
            out.append(Decision(id: id, snapshot: s, reasons: reasons))
        }
        return out
    }
}

extension Engine {
    // MARK: Forget

    func forget(policy: ForgetPolicy, dryRun: Bool) async throws(BackupError) -> ForgetResult {
        guard !policy.isEmpty else {
            throw BackupError(.invalidArgument, message: "forget needs at least one keep rule (for example keep-last 7) or snapshot ids")
        }
        for n in [policy.keepLast, policy.keepHourly, policy.keepDaily, policy.keepWeekly, policy.keepMonthly, policy.keepYearly]
        where (n ?? 0) < 0 {
            throw BackupError(.invalidArgument, message: "keep counts cannot be negative")
        }
        let all = try await loadSnapshots()
        try verifyHeads(all, doing: "forget snapshots in this repository")
        let groups = ForgetPlanner.plan(policy, all: all)
        let removed = groups.flatMap { $0.decisions.filter { !$0.keep } }.map(\.id)
        let freed = try await deleteSnapshots(Set(removed), dryRun: dryRun)
        return result(all: all, groups: groups.map { g in
            ForgetGroup(host: g.host, paths: g.paths, tags: g.tags,
                        kept: g.decisions.filter(\.keep).map { KeptSnapshot(snapshot: Self.info($0.id, $0.snapshot), reasons: $0.reasons) },
                        removed: g.decisions.filter { !$0.keep }.map { Self.info($0.id, $0.snapshot) })
        }, bytesFreed: freed)
    }

    /// Forgets the snapshots named (ids or unique prefixes of at least 4 hex digits). A writer's
    /// newest snapshot is refused: it anchors that writer's chain and the devices' heads.
    func forget(snapshots selectors: [String], dryRun: Bool) async throws(BackupError) -> ForgetResult {
        guard !selectors.isEmpty else { throw BackupError(.invalidArgument, message: "name at least one snapshot to forget") }
        let all = try await loadSnapshots()
        try verifyHeads(all, doing: "forget snapshots in this repository")
        var chosen: [ObjectID: Snapshot] = [:]
        for sel in selectors {
            let (id, s) = try resolve(sel, in: all)
            let newer = all.contains { $0.1.writerID == s.writerID && $0.1.seq > s.seq }
            guard newer else {
                throw BackupError(.invalidArgument, object: id.snapshotName,
                                  message: "snapshot \(id.hex.prefix(8)) is the newest snapshot of the device that made it (writer \(Hex.string(s.writerID).prefix(8))); "
                                    + "Coffer keeps it so that a rolled-back repository is still detected. Nothing was forgotten. "
                                    + "Make a newer backup from that device first")
            }
            chosen[id] = s
        }
        let freed = try await deleteSnapshots(Set(chosen.keys), dryRun: dryRun)
        let removed = all.filter { chosen[$0.0] != nil }
        return result(all: all, groups: [ForgetGroup(host: nil, paths: nil, tags: nil, kept: [],
                                                     removed: removed.reversed().map { Self.info($0.0, $0.1) })],
                      bytesFreed: freed)
    }

    private func result(all: [(ObjectID, Snapshot)], groups: [ForgetGroup], bytesFreed: Int64) -> ForgetResult {
        let keptIDs = Set(groups.flatMap { $0.kept.map(\.snapshot.id) })
        let removedIDs = Set(groups.flatMap { $0.removed.map(\.id) })
        return ForgetResult(kept: all.filter { keptIDs.contains($0.0.hex) }.map { Self.info($0.0, $0.1) },
                            removed: all.filter { removedIDs.contains($0.0.hex) }.map { Self.info($0.0, $0.1) },
                            groups: groups, bytesFreed: bytesFreed)
    }

    /// Deletes the snapshot objects; returns their stored size (what the listing says they took).
    private func deleteSnapshots(_ ids: Set<ObjectID>, dryRun: Bool) async throws(BackupError) -> Int64 {
        guard !dryRun, !ids.isEmpty else { return 0 }
        var sizes: [String: Int] = [:]
        for info in try await listObjects("snapshots/") { sizes[info.name] = info.size }
        var freed: Int64 = 0
        for id in ids.sorted() {
            try await objects.delete(id.snapshotName, doing: "removing \(id.snapshotName)")
            freed += Int64(sizes[id.snapshotName] ?? 0)
            _ = snapshotCache.withLock { $0.removeValue(forKey: id) }
        }
        return freed
    }
}
