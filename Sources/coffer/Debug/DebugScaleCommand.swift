import ArgumentParser
@_spi(Testing) import CofferBackup
import Foundation

/// `coffer debug-scale`: hidden commands for scripts/bench-scale.sh. They exist in the shipped
/// binary (so the release build is what gets measured) but refuse to run unless
/// COFFER_ENABLE_DEBUG_COMMANDS=1, because `synthesize` writes index entries for packs that do not
/// exist: a repository that `check` then reports as damaged.
struct DebugScaleCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "debug-scale",
        abstract: "Scale testing (hidden; needs COFFER_ENABLE_DEBUG_COMMANDS=1).",
        shouldDisplay: false,
        subcommands: [Synthesize.self, Open.self])

    static func guardEnabled() throws {
        guard ProcessInfo.processInfo.environment["COFFER_ENABLE_DEBUG_COMMANDS"] == "1" else {
            throw CLIError(.usage, "debug-scale is for scale testing only",
                           hint: "It writes index entries for packs that do not exist; set COFFER_ENABLE_DEBUG_COMMANDS=1 on a throwaway repository.")
        }
    }

    struct Synthesize: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "synthesize",
                                                        abstract: "Add index objects listing N random blob ids in packs that do not exist.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "How many blob ids.") var blobs: Int
        @Option(name: .customLong("per-pack"), help: "Blobs per synthetic pack.") var perPack = 100
        @Option(name: .customLong("per-object"), help: "Blobs per index object.") var perObject = 100_000
        @Option(help: "Seed of the ids.") var seed: UInt64 = 1

        func run() async throws {
            try DebugScaleCommand.guardEnabled()
            let access = RepositoryAccess(global)
            try await ErrorReport.run(logger: access.logger) {
                let r = try await access.withRepository {
                    try await $0.writeSyntheticIndex(blobs: blobs, blobsPerPack: perPack, blobsPerObject: perObject, seed: seed)
                }
                Terminal.line("wrote \(r.indexObjects) index objects: \(r.blobs) blobs in \(r.packs) synthetic packs")
                return .ok
            }
        }
    }

    struct Open: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "open", abstract: "Open the repository and print how long it took (ms).")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Also time this many lookups of absent and of present ids.") var probe = 0

        func run() async throws {
            try DebugScaleCommand.guardEnabled()
            let access = RepositoryAccess(global)
            try await ErrorReport.run(logger: access.logger) {
                let t0 = ContinuousClock.now
                let p = try await access.withRepository { repo in
                    let d = ContinuousClock.now - t0
                    let ms = Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15
                    Terminal.line(String(format: "open_ms %.1f", ms))
                    return probe > 0 ? repo.probeIndex(samples: probe) : nil
                }
                if let p {
                    Terminal.line(String(format: "runs %d blobs %d filter_false_positive %.4f absent_ns %.0f present_ns %.0f verify_ms %.0f",
                                         p.runs, p.blobs, p.falsePositiveRate, p.absentLookupNs, p.presentLookupNs, p.verifyMs))
                }
                return .ok
            }
        }
    }
}
