// One libFuzzer binary for every harness; `COFFER_FUZZ_TARGET` picks which one runs. Built with
// `-sanitize=fuzzer -parse-as-library`; use scripts/fuzz. SwiftPM links an executable's `main` to
// `CofferFuzz_main` (so that tests can import executables); that function, defined at the end,
// hands over to libFuzzer's driver, which then calls the two entry points below.
@_spi(Fuzzing) import CofferCore
@_spi(Fuzzing) import CofferRealm
@_spi(Fuzzing) import CofferS3
@_spi(Fuzzing) import CofferVault
import Dispatch
import Foundation

let harnesses = VaultFuzzHarnesses.all + RealmFuzzHarnesses.all + S3FuzzHarnesses.all

/// Set once by `LLVMFuzzerInitialize`, before any input runs; read-only afterwards.
nonisolated(unsafe) var selected: FuzzHarness?

/// Carries one input's outcome out of its task.
final class Outcome: @unchecked Sendable {
    var finding: FuzzFinding?
}

@_cdecl("LLVMFuzzerInitialize")
public func fuzzerInitialize(_ argc: UnsafeMutablePointer<CInt>?, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?) -> CInt {
    let environment = ProcessInfo.processInfo.environment
    if environment["COFFER_FUZZ_TARGET"] == "list" {
        print(harnesses.map(\.name).joined(separator: "\n"))
        exit(0)
    }
    guard let name = environment["COFFER_FUZZ_TARGET"], let harness = harnesses.first(where: { $0.name == name }) else {
        FileHandle.standardError.write(Data("CofferFuzz: set COFFER_FUZZ_TARGET to one of: \(harnesses.map(\.name).joined(separator: " "))\n".utf8))
        exit(2)
    }
    selected = harness
    // scripts/fuzz asks for the seeds and the dictionary, written as files, before fuzzing.
    if let folder = environment["COFFER_FUZZ_WRITE_SEEDS"] {
        let url = URL(fileURLWithPath: folder)
        do {
            try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
            for (i, seed) in harness.seeds().enumerated() {
                try Data(seed).write(to: url.appendingPathComponent("seed-\(i)"))
            }
            if let dictionary = environment["COFFER_FUZZ_WRITE_DICTIONARY"] {
                let lines = harness.dictionary.map { token in
                    "\"" + token.map { b in "\\x" + String(b, radix: 16).leftPadded(2) }.joined() + "\""
                }
                try Data((lines.joined(separator: "\n") + "\n").utf8).write(to: URL(fileURLWithPath: dictionary))
            }
        } catch {
            FileHandle.standardError.write(Data("CofferFuzz: cannot write the seeds to \(folder): \(error)\n".utf8))
            exit(2)
        }
        exit(0)
    }
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzerTestOneInput(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    guard let harness = selected else { return 0 }
    let bytes = start.map { Array(UnsafeBufferPointer(start: $0, count: count)) } ?? []
    let outcome = Outcome()
    let done = DispatchSemaphore(value: 0)
    // This thread is libFuzzer's, not one of the concurrency pool's, so waiting here is safe.
    Task {
        do throws(FuzzFinding) { _ = try await harness.run(bytes) } catch { outcome.finding = error }
        done.signal()
    }
    done.wait()
    if let finding = outcome.finding {
        fatalError("\(harness.name): \(finding)")
    }
    return 0
}

extension String {
    func leftPadded(_ width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}

/// libFuzzer's driver (compiler-rt's FuzzerDriver.cpp): runs the fuzzer with `argv` and `callback`.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<CInt>,
                         _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

@_cdecl("CofferFuzz_main")
public func cofferFuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var count = argc
    var arguments = argv
    return LLVMFuzzerRunDriver(&count, &arguments, { fuzzerTestOneInput($0, $1) })
}
