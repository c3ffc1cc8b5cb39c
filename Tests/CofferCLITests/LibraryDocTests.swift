import Foundation
import Testing

/// The text between `begin` and `end`, trimmed.
func between(_ text: String, _ begin: String, _ end: String) -> String? {
    guard let a = text.range(of: begin), let b = text.range(of: end, range: a.upperBound..<text.endIndex) else { return nil }
    return text[a.upperBound..<b.lowerBound].trimmingCharacters(in: .whitespacesAndNewlines)
}

/// docs/LIBRARY.md's example is the code that `CofferBackupTests/LibraryExampleTests.swift` compiles
/// and runs; this keeps the two identical.
@Test func libraryDocExampleMatchesTheCompiledOne() throws {
    let doc = try String(contentsOf: packageRoot.appendingPathComponent("docs/LIBRARY.md"), encoding: .utf8)
    let test = try String(contentsOf: packageRoot.appendingPathComponent("Tests/CofferBackupTests/LibraryExampleTests.swift"), encoding: .utf8)
    let compiled = try #require(between(test, "// EXAMPLE BEGIN", "// EXAMPLE END"))
    let documented = try #require(between(doc, "<!-- EXAMPLE BEGIN -->\n```swift", "```\n<!-- EXAMPLE END -->"))
    #expect(documented == compiled, "docs/LIBRARY.md's example differs from Tests/CofferBackupTests/LibraryExampleTests.swift")
}

/// docs/LIBRARY.md's CofferKit example is the code that `CofferKitTests/KitExampleTests.swift` runs.
@Test func libraryDocKitExampleMatchesTheCompiledOne() throws {
    let doc = try String(contentsOf: packageRoot.appendingPathComponent("docs/LIBRARY.md"), encoding: .utf8)
    let test = try String(contentsOf: packageRoot.appendingPathComponent("Tests/CofferKitTests/KitExampleTests.swift"), encoding: .utf8)
    let compiled = try #require(between(test, "// EXAMPLE BEGIN", "// EXAMPLE END"))
    let documented = try #require(between(doc, "<!-- KIT EXAMPLE BEGIN -->\n```swift", "```\n<!-- KIT EXAMPLE END -->"))
    #expect(documented == compiled, "docs/LIBRARY.md's CofferKit example differs from Tests/CofferKitTests/KitExampleTests.swift")
}

/// docs/LIBRARY.md's "Testing your integration" example is the test `CofferKitTests/TestingDocExampleTests.swift` runs.
@Test func libraryDocTestingExampleMatchesTheCompiledOne() throws {
    let doc = try String(contentsOf: packageRoot.appendingPathComponent("docs/LIBRARY.md"), encoding: .utf8)
    let test = try String(contentsOf: packageRoot.appendingPathComponent("Tests/CofferKitTests/TestingDocExampleTests.swift"), encoding: .utf8)
    let compiled = try #require(between(test, "// EXAMPLE BEGIN", "// EXAMPLE END"))
    let documented = try #require(between(doc, "<!-- TESTING EXAMPLE BEGIN -->\n```swift", "```\n<!-- TESTING EXAMPLE END -->"))
    #expect(documented == compiled, "docs/LIBRARY.md's withRealmCluster example differs from Tests/CofferKitTests/TestingDocExampleTests.swift")
}

/// Every exit code in `Sources/coffer/Support/ExitCodes.swift` is documented in docs/CLI.md, and
/// the documentation lists no other.
@Test func exitCodesAreDocumented() throws {
    let source = try String(contentsOf: packageRoot.appendingPathComponent("Sources/coffer/Support/ExitCodes.swift"), encoding: .utf8)
    let doc = try String(contentsOf: packageRoot.appendingPathComponent("docs/CLI.md"), encoding: .utf8)
    var defined: Set<Int> = []
    for line in source.split(separator: "\n") {
        let t = line.trimmingCharacters(in: .whitespaces)
        guard t.hasPrefix("case "), let eq = t.firstIndex(of: "=") else { continue }
        if let n = Int(t[t.index(after: eq)...].trimmingCharacters(in: .whitespaces)) { defined.insert(n) }
    }
    let table = try #require(doc.range(of: "## Exit codes")).upperBound
    var documented: Set<Int> = []
    for line in doc[table...].split(separator: "\n") {
        guard line.hasPrefix("| ") else { if !documented.isEmpty { break } else { continue } }
        let cell = line.dropFirst(2).prefix { $0 != " " && $0 != "|" }
        if let n = Int(cell) { documented.insert(n) }
    }
    #expect(defined.count >= 10)
    #expect(defined == documented, "defined \(defined.sorted()), documented \(documented.sorted())")
}
