import Foundation
import Testing
@testable import CofferBackup
import CofferCore
import CofferStorage

/// `forget` with restic's semantics: per group, rules and filters as restic 0.14 applies them
/// (restic itself is run beside Coffer as the reference), each writer's newest snapshot always kept.
@Suite struct ForgetPolicyTests {
    /// Issue 12, problem 1: a backup of another path (or another host) must not lose its only
    /// snapshot to `--keep-last 1` of the other group.
    @Test func keepLastAppliesPerHostAndPaths() async throws {
        let s = Scratch()
        let t = try await TestRepo.make(s)
        for dir in ["a", "b"] { write(Data(dir.utf8), to: s.path("src/\(dir)/f.txt")) }
        let base = Date(timeIntervalSince1970: 1_760_000_000)
        func backup(_ dir: String, _ minutes: Double, host: String = "laptop") async throws -> String {
            let o = BackupOptions(hostname: host, time: base.addingTimeInterval(minutes * 60))
            let summary: BackupSummary = try await t.repo.backup(paths: [s.path("src/\(dir)")], options: o)
            return summary.snapshotID
        }
        let bOnly = try await backup("b", 0)
        let a1 = try await backup("a", 1)
        let otherHost = try await backup("a", 2, host: "desktop")
        let a2 = try await backup("a", 3)
        let a3 = try await backup("a", 4)

        let dry = try await t.repo.forget(policy: ForgetPolicy(keepLast: 1), dryRun: true)
        #expect(try await t.repo.snapshots().count == 5, "a dry run removes nothing")
        #expect(Set(dry.removed.map(\.id)) == [a1, a2])
        #expect(dry.bytesFreed == 0)

        let r = try await t.repo.forget(policy: ForgetPolicy(keepLast: 1))
        #expect(Set(r.kept.map(\.id)) == [bOnly, otherHost, a3])
        #expect(Set(r.removed.map(\.id)) == [a1, a2])
        #expect(Set(try await t.repo.snapshots().map(\.id)) == [bOnly, otherHost, a3])
        #expect(r.groups.count == 3)
        let aGroup = try #require(r.groups.first { $0.host == "laptop" && $0.paths == [s.path("src/a")] })
        #expect(aGroup.kept.map(\.snapshot.id) == [a3])
        #expect(aGroup.kept.first?.reasons.contains("last snapshot") == true)
        #expect(aGroup.kept.first?.reasons.contains(ForgetPlanner.newestOfWriterReason) == true)
        #expect(aGroup.removed.map(\.id) == [a2, a1], "removed newest first")
        // The snapshot objects' stored bytes are reported.
        #expect(r.bytesFreed > 0)

        // Grouping by nothing is restic's single group: only the newest stays (plus nothing else,
        // since one writer made them all).
        let one = try await t.repo.forget(policy: ForgetPolicy(keepLast: 1, groupBy: .none))
        #expect(one.kept.map(\.id) == [a3])
        #expect(Set(one.removed.map(\.id)) == [bOnly, otherHost])
    }

    @Test func explicitIDsAndTheNewestOfAWriter() async throws {
        let s = Scratch()
        let t = try await TestRepo.make(s)
        write(Data("x".utf8), to: s.path("src/a/f.txt"))
        var ids: [String] = []
        for i in 0..<3 {
            let o = BackupOptions(time: Date(timeIntervalSince1970: 1_760_000_000 + Double(i) * 60))
            let summary: BackupSummary = try await t.repo.backup(paths: [s.path("src/a")], options: o)
            ids.append(summary.snapshotID)
        }
        // The newest of its writer is refused and nothing is removed, even with an older one named too.
        await #expect(throws: BackupError.self) { try await t.repo.forget(snapshots: [String(ids[0].prefix(8)), ids[2]]) }
        #expect(try await t.repo.snapshots().count == 3)
        await #expect(throws: BackupError.self) { try await t.repo.forget(snapshots: ["ffff0000"]) }
        let r = try await t.repo.forget(snapshots: [String(ids[1].prefix(6)), ids[0]])
        #expect(Set(r.removed.map(\.id)) == [ids[0], ids[1]])
        #expect(try await t.repo.snapshots().map(\.id) == [ids[2]])
        // A policy without a rule is refused (filters are not rules).
        await #expect(throws: BackupError.self) { try await t.repo.forget(policy: ForgetPolicy(hosts: ["x"])) }
    }

    /// Synthetic snapshots of one writer at the given UTC times ("2024-03-31 12:00"), oldest first.
    static func snapshots(_ times: [String]) throws -> [(ObjectID, Snapshot)] {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyy-MM-dd HH:mm"
        return try times.enumerated().map { i, t in
            let date = try #require(f.date(from: t), "\(t)")
            let s = Snapshot(writerID: Array(repeating: 1, count: 16), seq: UInt64(i + 1), prev: nil, parent: nil,
                             timeSec: Int64(date.timeIntervalSince1970), timeNsec: 0, root: ChunkID(hex: String(repeating: "ab", count: 32))!,
                             hostname: "h", paths: ["/p"], tags: [], summary: SnapshotSummary())
            return (ObjectID(hashing: Array(t.utf8)), s)
        }
    }

    /// --keep-within on the calendar, as Go's AddDate: the day overflows into the next month (31
    /// March minus one month is 2 March in a leap year), months cross year boundaries, and the limit
    /// itself is not "within" (strictly after).
    @Test func keepWithinCalendarEdges() throws {
        func kept(_ within: CalendarSpan, _ times: [String]) throws -> [String] {
            let all = try Self.snapshots(times)
            let decisions = ForgetPlanner.apply(ForgetPolicy(keepWithin: within), newestFirst: all.reversed())
            return decisions.filter(\.keep).map { d in times[all.firstIndex { $0.0 == d.id }!] }
        }
        #expect(try kept(CalendarSpan(months: 1), ["2024-03-02 11:00", "2024-03-02 12:00", "2024-03-02 13:00", "2024-03-31 12:00"])
                == ["2024-03-31 12:00", "2024-03-02 13:00"])
        #expect(try kept(CalendarSpan(months: 2), ["2023-11-14 23:59", "2023-11-15 00:01", "2024-01-15 00:00"])
                == ["2024-01-15 00:00", "2023-11-15 00:01"])
        #expect(try kept(CalendarSpan(years: 1, hours: 2), ["2023-02-28 21:59", "2023-02-28 22:01", "2024-02-29 00:00"])
                == ["2024-02-29 00:00", "2023-02-28 22:01"], "29 Feb minus a year is 1 March, minus 2 h is 28 Feb 22:00")
        #expect(try kept(CalendarSpan(days: 1), ["2024-01-01 00:00", "2024-01-02 00:00"]) == ["2024-01-02 00:00"])
    }

    @Test func parsing() throws {
        #expect(try CalendarSpan(parsing: "1y6m") == CalendarSpan(years: 1, months: 6))
        #expect(try CalendarSpan(parsing: "36h") == CalendarSpan(hours: 36))
        #expect(try CalendarSpan(parsing: "2y5m7d3h").description == "2y5m7d3h")
        for bad in ["", "7", "d", "7x", "1d2d", "-1d", "1.5d"] {
            #expect(throws: BackupError.self, "\(bad)") { try CalendarSpan(parsing: bad) }
        }
        #expect(try SnapshotGrouping(parsing: "") == .none)
        #expect(try SnapshotGrouping(parsing: "host,paths") == .default)
        #expect(try SnapshotGrouping(parsing: "tags,host") == SnapshotGrouping(host: true, paths: false, tags: true))
        #expect(throws: BackupError.self) { try SnapshotGrouping(parsing: "hosts,pathz") }
    }

    /// The same snapshots (times, hosts, paths, tags) in Coffer and in a restic repository; for each
    /// policy, Coffer keeps exactly what restic keeps (apart from each writer's newest snapshot,
    /// which Coffer always keeps, with its own reason).
    @Test(.timeLimit(.minutes(10))) func keepsWhatResticKeeps() async throws {
        let restic = try #require(Self.which("restic"), "restic (0.14+) is the reference: apt-get install restic")
        let s = Scratch()
        let t = try await TestRepo.make(s)
        for dir in ["a", "b"] { write(Data(dir.utf8), to: s.path("src/\(dir)/f.txt")) }
        var env = ProcessInfo.processInfo.environment
        env["TZ"] = "UTC"
        env["RESTIC_PASSWORD"] = "reference"
        env["RESTIC_REPOSITORY"] = s.path("restic")
        env["RESTIC_CACHE_DIR"] = s.path("restic-cache")
        try Self.run(restic, ["init"], env: env)

        // 30 snapshots over about 26 months with irregular gaps (hours to weeks), two hosts, two
        // paths, some tagged: every bucket rule sees gaps, repeats and boundaries.
        var rng: UInt64 = 0x9e37_79b9_7f4a_7c15
        func next(_ n: UInt64) -> UInt64 { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng % n }
        var time = 1_700_000_000 - 1_700_000_000 % 3600  // 2023-11-14 22:00 UTC
        var byTime: [Int: String] = [:]  // unix time -> Coffer snapshot id
        let fmt = DateFormatter()
        fmt.locale = Locale(identifier: "en_US_POSIX")
        fmt.timeZone = TimeZone(identifier: "UTC")
        fmt.dateFormat = "yyyy-MM-dd HH:mm:ss"
        for i in 0..<30 {
            time += [1800, 3 * 3600, 20 * 3600, 2 * 86400, 9 * 86400, 33 * 86400][Int(next(6))] + Int(next(600))
            let host = next(4) == 0 ? "desktop" : "laptop"
            let dir = next(3) == 0 ? "b" : "a"
            let tags = i % 7 == 3 ? ["monthly", "keep"] : (i % 5 == 0 ? ["keep"] : [])
            let date = Date(timeIntervalSince1970: Double(time))
            let summary: BackupSummary = try await t.repo.backup(paths: [s.path("src/\(dir)")],
                                                                 options: BackupOptions(hostname: host, tags: tags, time: date))
            byTime[time] = summary.snapshotID
            try Self.run(restic, ["backup", "-q", "--time", fmt.string(from: date), "--host", host]
                         + tags.flatMap { ["--tag", $0] } + [s.path("src/\(dir)")], env: env)
        }

        let cases: [([String], ForgetPolicy)] = [
            (["--keep-last", "3"], ForgetPolicy(keepLast: 3)),
            (["--keep-hourly", "5"], ForgetPolicy(keepHourly: 5)),
            (["--keep-daily", "4"], ForgetPolicy(keepDaily: 4)),
            (["--keep-weekly", "3", "--keep-monthly", "4"], ForgetPolicy(keepWeekly: 3, keepMonthly: 4)),
            (["--keep-yearly", "2", "--keep-last", "1"], ForgetPolicy(keepLast: 1, keepYearly: 2)),
            (["--keep-within", "2m"], ForgetPolicy(keepWithin: CalendarSpan(months: 2))),
            (["--keep-within", "1y15d", "--keep-daily", "2"], ForgetPolicy(keepDaily: 2, keepWithin: CalendarSpan(years: 1, days: 15))),
            (["--keep-within", "30h"], ForgetPolicy(keepWithin: CalendarSpan(hours: 30))),
            (["--keep-tag", "monthly,keep", "--keep-last", "1"], ForgetPolicy(keepLast: 1, keepTags: [["monthly", "keep"]])),
            (["--keep-tag", "keep"], ForgetPolicy(keepTags: [["keep"]])),
            (["--keep-last", "2", "--group-by", "host"], ForgetPolicy(keepLast: 2, groupBy: SnapshotGrouping(host: true, paths: false))),
            (["--keep-monthly", "3", "--group-by", ""], ForgetPolicy(keepMonthly: 3, groupBy: .none)),
            (["--keep-last", "1", "--group-by", "host,paths,tags"], ForgetPolicy(keepLast: 1, groupBy: SnapshotGrouping(host: true, paths: true, tags: true))),
            (["--keep-last", "2", "--host", "desktop"], ForgetPolicy(keepLast: 2, hosts: ["desktop"])),
            (["--keep-daily", "1", "--tag", "keep"], ForgetPolicy(keepDaily: 1, tags: [["keep"]])),
            (["--keep-last", "1", "--path", s.path("src/b")], ForgetPolicy(keepLast: 1, paths: [s.path("src/b")])),
        ]
        let iso = ISO8601DateFormatter()
        for (args, policy) in cases {
            let out = try Self.run(restic, ["forget", "--dry-run", "--json"] + args, env: env)
            let groups = try #require(try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [[String: Any]], "restic printed: \(out)")
            func times(_ key: String) throws -> Set<Int> {
                var out = Set<Int>()
                for g in groups {
                    for snap in g[key] as? [[String: Any]] ?? [] {
                        let text = try #require(snap["time"] as? String)
                        let date = try #require(iso.date(from: text), "restic time \(text)")
                        out.insert(Int(date.timeIntervalSince1970))
                    }
                }
                return out
            }
            let resticKept = try times("keep"), resticRemoved = try times("remove")

            let result = try await t.repo.forget(policy: policy, dryRun: true)
            let timeOf = Dictionary(uniqueKeysWithValues: byTime.map { ($0.value, $0.key) })
            let byRule = Set(result.groups.flatMap(\.kept).filter { $0.reasons.contains { $0 != ForgetPlanner.newestOfWriterReason } }
                .compactMap { timeOf[$0.snapshot.id] })
            let anchorOnly = Set(result.groups.flatMap(\.kept).filter { $0.reasons == [ForgetPlanner.newestOfWriterReason] }
                .compactMap { timeOf[$0.snapshot.id] })
            let removed = Set(result.removed.compactMap { timeOf[$0.id] })
            #expect(byRule == resticKept, "\(args): kept by rules \(byRule.sorted()), restic \(resticKept.sorted())")
            #expect(removed.union(anchorOnly) == resticRemoved, "\(args): removed \(removed.sorted()) (+ newest of the device \(anchorOnly.sorted())), restic \(resticRemoved.sorted())")
            #expect(anchorOnly.count <= 1, "one writer made them all")
            #expect(result.groups.count == groups.count, "\(args): \(result.groups.count) groups, restic \(groups.count)")
        }
    }

    static func which(_ name: String) -> String? {
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
            let p = "\(dir)/\(name)"
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        return nil
    }

    /// Runs a program to completion and returns its stdout; a non-zero exit fails with its stderr.
    @discardableResult
    static func run(_ exe: String, _ args: [String], env: [String: String]) throws -> String {
        let dir = FileManager.default.temporaryDirectory
        let outURL = dir.appendingPathComponent("forget-out-\(UUID().uuidString)")
        let errURL = dir.appendingPathComponent("forget-err-\(UUID().uuidString)")
        FileManager.default.createFile(atPath: outURL.path, contents: nil)
        FileManager.default.createFile(atPath: errURL.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: outURL); try? FileManager.default.removeItem(at: errURL) }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = args
        p.environment = env
        p.standardOutput = try FileHandle(forWritingTo: outURL)
        p.standardError = try FileHandle(forWritingTo: errURL)
        p.standardInput = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        let out = (try? String(contentsOf: outURL, encoding: .utf8)) ?? ""
        let err = (try? String(contentsOf: errURL, encoding: .utf8)) ?? ""
        struct Failed: Error, CustomStringConvertible { var description: String }
        guard p.terminationStatus == 0 else { throw Failed(description: "\(exe) \(args) exited \(p.terminationStatus): \(err)") }
        return out
    }
}
