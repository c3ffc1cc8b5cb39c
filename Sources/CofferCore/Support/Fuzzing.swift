#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Support for the fuzz harnesses (Fuzz/ and the tests that replay them). Behind `@_spi(Fuzzing)`:
/// not part of the library's API, and nothing here runs unless a harness calls it.
///
/// A harness is one parser that a realm or a client exposes to the network, wrapped so that any
/// input is fed to it and every property that must hold for an accepted input is checked. The same
/// harness value is driven by libFuzzer (`scripts/fuzz`) and by a Swift Testing test that replays
/// its seeds, the committed regression inputs and a few thousand deterministic mutations.

/// An input broke a property the parser promises (a crash is a finding too, but that one libFuzzer
/// and the test runner see by themselves).
@_spi(Fuzzing)
public struct FuzzFinding: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// What the parser made of one input.
@_spi(Fuzzing)
public enum FuzzVerdict: Sendable, Equatable {
    /// Parsed (and every property checked held).
    case accepted
    /// Refused with an error, as bad input should be.
    case rejected
}

/// One fuzz target.
@_spi(Fuzzing)
public struct FuzzHarness: Sendable {
    /// Name used on the command line (`scripts/fuzz NAME`), for the corpus folder and the
    /// regression folder `Fuzz/Regressions/NAME/`.
    public let name: String
    /// Inputs to start from (valid ones mostly; they are written into the working corpus).
    public let seeds: @Sendable () -> [[UInt8]]
    /// Tokens the mutations splice in (also written as a libFuzzer dictionary).
    public let dictionary: [[UInt8]]
    /// Feeds one input. Throws only when a property is broken.
    public let run: @Sendable ([UInt8]) async throws(FuzzFinding) -> FuzzVerdict

    public init(name: String, dictionary: [[UInt8]] = [], seeds: @escaping @Sendable () -> [[UInt8]],
                run: @escaping @Sendable ([UInt8]) async throws(FuzzFinding) -> FuzzVerdict) {
        self.name = name
        self.seeds = seeds
        self.dictionary = dictionary
        self.run = run
    }
}

/// A deterministic generator of mutated inputs (SplitMix64), so that a test's inputs are the same on
/// every run and a failure names the input's index.
@_spi(Fuzzing)
public struct FuzzMutator: Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in `0..<bound` (`bound` > 0).
    public mutating func below(_ bound: Int) -> Int { Int(next() % UInt64(bound)) }

    public mutating func bytes(_ count: Int) -> [UInt8] { (0..<count).map { _ in UInt8(truncatingIfNeeded: next()) } }

    /// One to four mutations of `input`: bit flips, byte changes, boundary bytes, insertions,
    /// deletions, duplicated ranges, dictionary tokens, splices with `others`, truncation.
    public mutating func mutate(_ input: [UInt8], dictionary: [[UInt8]], others: [[UInt8]]) -> [UInt8] {
        var out = input
        for _ in 0...below(4) {
            switch below(10) {
            case 0 where !out.isEmpty:
                let i = below(out.count)
                out[i] ^= UInt8(1) << UInt8(below(8))
            case 1 where !out.isEmpty:
                out[below(out.count)] = UInt8(truncatingIfNeeded: next())
            case 2 where !out.isEmpty:
                let boundary: [UInt8] = [0x00, 0x01, 0x7F, 0x80, 0xFF, 0x22, 0x2E, 0x3C, 0x3E, 0x26]
                out[below(out.count)] = boundary[below(boundary.count)]
            case 3:
                out.insert(contentsOf: bytes(1 + below(8)), at: below(out.count + 1))
            case 4 where !out.isEmpty:
                let start = below(out.count)
                out.removeSubrange(start..<min(out.count, start + 1 + below(16)))
            case 5 where !out.isEmpty:
                let start = below(out.count)
                let piece = Array(out[start..<min(out.count, start + 1 + below(32))])
                out.insert(contentsOf: piece, at: below(out.count + 1))
            case 6 where !dictionary.isEmpty, 7 where !dictionary.isEmpty:
                let token = dictionary[below(dictionary.count)]
                if below(2) == 0 || out.isEmpty {
                    out.insert(contentsOf: token, at: below(out.count + 1))
                } else {
                    let start = below(out.count)
                    out.replaceSubrange(start..<min(out.count, start + token.count), with: token)
                }
            case 8 where !others.isEmpty:
                let other = others[below(others.count)]
                let cut = below(out.count + 1)
                let from = below(other.count + 1)
                out = Array(out[..<cut]) + Array(other[from...])
            case 9 where !out.isEmpty:
                out = Array(out.prefix(below(out.count)))
            default:
                out.append(UInt8(truncatingIfNeeded: next()))
            }
        }
        return out
    }
}

/// Replays a harness without libFuzzer: its seeds, the given regression inputs, and `mutations`
/// deterministic mutations of them (plus some purely random inputs). Used by the test suite.
@_spi(Fuzzing)
public struct FuzzReplay: Sendable {
    public struct Report: Sendable {
        public var inputs = 0
        public var accepted = 0
        public var rejected = 0
        /// Seeds (index in `seeds()`) that were rejected.
        public var rejectedSeeds: [Int] = []
        /// Broken properties: which input (kind and index) and what broke.
        public var findings: [String] = []
    }

    public static func run(_ harness: FuzzHarness, regressions: [(name: String, bytes: [UInt8])] = [],
                           mutations: Int, seed: UInt64 = 0xC0FFE) async -> Report {
        var report = Report()
        let seeds = harness.seeds()
        func feed(_ input: [UInt8], _ label: String) async -> FuzzVerdict? {
            report.inputs += 1
            do {
                let verdict = try await harness.run(input)
                if verdict == .accepted { report.accepted += 1 } else { report.rejected += 1 }
                return verdict
            } catch {
                report.findings.append("\(harness.name) \(label): \(error)")
                return nil
            }
        }
        for (i, input) in seeds.enumerated() where await feed(input, "seed \(i)") == .rejected {
            report.rejectedSeeds.append(i)
        }
        for r in regressions { _ = await feed(r.bytes, "regression \(r.name)") }
        // Accepted mutants join the pool (up to 512), so mutations build on one another.
        var pool = seeds + regressions.map(\.bytes)
        var m = FuzzMutator(seed: seed)
        for i in 0..<mutations {
            let input: [UInt8]
            if pool.isEmpty || i % 16 == 15 {
                input = m.bytes(m.below(256))
            } else {
                input = m.mutate(pool[m.below(pool.count)], dictionary: harness.dictionary, others: pool)
            }
            if await feed(input, "mutation \(i) (seed \(seed)): \(input.count) bytes") == .accepted, pool.count < 512 {
                pool.append(input)
            }
        }
        return report
    }
}

extension FuzzReplay {
    /// The committed regression inputs of harness `name`: every file in
    /// `Fuzz/Regressions/NAME/` of the source tree at `root` (none if the folder does not exist).
    public static func regressions(_ name: String, root: URL) -> [(name: String, bytes: [UInt8])] {
        let folder = root.appendingPathComponent("Fuzz/Regressions/\(name)")
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []).filter { !$0.hasPrefix(".") }.sorted()
        return names.compactMap { file in
            (try? Data(contentsOf: folder.appendingPathComponent(file))).map { (file, Array($0)) }
        }
    }
}
