import Foundation
import Testing

/// The man pages in docs/man are generated from the argument parser's definitions (scripts/man).
/// They are committed, so they can fall behind the binary: this compares them with what the
/// binary itself says it takes (`coffer --experimental-dump-help`, the same source the generator
/// reads) and fails, naming the command, until `scripts/man` is run again.
@Suite("man pages match the binary")
struct ManPageTests {
    struct Command {
        var page: String
        var abstract: String
        var arguments: [[String: Any]]
    }

    /// Every command shown in `--help` (hidden ones and everything under them are left out, as
    /// scripts/man leaves them out of the manual).
    static func displayedCommands() async throws -> [Command] {
        let r = try await Sandbox().run(["--experimental-dump-help"])
        #expect(r.status == 0, "\(r)")
        let root = try #require(
            (try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])?["command"] as? [String: Any])
        var out: [Command] = []
        func walk(_ c: [String: Any]) {
            guard c["shouldDisplay"] as? Bool ?? true else { return }
            let name = ((c["superCommands"] as? [String] ?? []) + [c["commandName"] as? String ?? "?"]).joined(separator: ".")
            out.append(Command(page: name, abstract: c["abstract"] as? String ?? "",
                               arguments: c["arguments"] as? [[String: Any]] ?? []))
            for s in c["subcommands"] as? [[String: Any]] ?? [] { walk(s) }
        }
        walk(root)
        return out
    }

    /// Letters and digits only: mdoc escapes and reflows text, the words stay.
    static func words(_ s: String) -> String { String(s.lowercased().filter { $0.isLetter || $0.isNumber }) }

    static let folder = packageRoot.appendingPathComponent("docs/man")

    @Test("one page per command shown in --help, and no page for a command that is gone")
    func pagesForCommands() async throws {
        let commands = try await Self.displayedCommands()
        #expect(commands.count > 30, "the binary lists \(commands.count) commands")
        let expected = Set(commands.map { "\($0.page).1" })
        let present = Set(try FileManager.default.contentsOfDirectory(atPath: Self.folder.path).filter { $0.hasSuffix(".1") })
        #expect(expected.subtracting(present).isEmpty,
                "no man page for \(expected.subtracting(present).sorted()): run scripts/man")
        #expect(present.subtracting(expected).isEmpty,
                "man pages for commands the binary does not show: \(present.subtracting(expected).sorted()): run scripts/man")
        #expect(present.contains("coffer.copy.1") && present.contains("coffer.vault.enable.1"))
        #expect(!present.contains { $0.hasPrefix("coffer.debug") || $0.hasPrefix("coffer.realm.bench") })
    }

    @Test("each page names its command, says what it does and describes every option with today's help text")
    func pagesDescribeEveryOption() async throws {
        for command in try await Self.displayedCommands() {
            let url = Self.folder.appendingPathComponent("\(command.page).1")
            guard let page = try? String(contentsOf: url, encoding: .utf8) else { continue }   // reported above
            let pageWords = Self.words(page)
            // The option names each `.It` line describes: `.It Fl n , d , -dry-run` → n, d, -dry-run.
            let described = Set(page.split(separator: "\n").filter { $0.hasPrefix(".It ") }
                .flatMap { $0.split(separator: " ").dropFirst().filter { $0 != "Fl" && $0 != "," && $0 != "Ar" } }
                .map(String.init))
            #expect(page.contains(".Dt \(command.page.uppercased()) 1"), "\(command.page)")
            #expect(pageWords.contains(Self.words(command.abstract)), "\(command.page): the abstract changed: run scripts/man")
            for argument in command.arguments where argument["shouldDisplay"] as? Bool ?? true {
                let names = argument["names"] as? [[String: String]] ?? []
                let kind = argument["kind"] as? String
                if kind == "positional" {
                    let value = try #require(argument["valueName"] as? String)
                    #expect(page.contains("Ar \(value)"), "\(command.page): no <\(value)> argument: run scripts/man")
                }
                for name in names {
                    let token = name["kind"] == "long" ? "-\(name["name"]!)" : name["name"]!
                    #expect(described.contains(token), "\(command.page): option \(name["name"]!) is not described: run scripts/man")
                }
                if let help = argument["abstract"] as? String, !help.isEmpty {
                    #expect(pageWords.contains(Self.words(help)),
                            "\(command.page): the help of \(names.map { $0["name"]! }) changed: run scripts/man")
                }
            }
        }
    }

    @Test("coffer(1) lists every exit code the CLI exits with, as its EXIT STATUS")
    func exitStatusSection() throws {
        let page = try String(contentsOf: Self.folder.appendingPathComponent("coffer.1"), encoding: .utf8)
        let section = try #require(page.range(of: ".Sh \"EXIT STATUS\"")).upperBound
        let rest = String(page[section...])
        let source = try String(contentsOf: packageRoot.appendingPathComponent("Sources/coffer/Support/ExitCodes.swift"), encoding: .utf8)
        let codes = source.split(separator: "\n").compactMap { line -> String? in
            let t = line.trimmingCharacters(in: .whitespaces)
            guard t.hasPrefix("case "), let eq = t.range(of: " = ") else { return nil }
            return String(t[eq.upperBound...])
        }
        #expect(codes.count >= 19, "\(codes)")
        for code in codes {
            #expect(rest.contains(".It \(code)\n"), "exit code \(code) is not in coffer(1): run scripts/man")
        }
        #expect(!rest.contains(".Ex -std"))
    }
}
