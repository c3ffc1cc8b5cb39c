import Foundation
import Testing

/// docs/LIBRARY.md's example is the code that `CofferBackupTests/LibraryExampleTests.swift` compiles
/// and runs; this keeps the two identical.
@Test func libraryDocExampleMatchesTheCompiledOne() throws {
    let doc = try String(contentsOf: packageRoot.appendingPathComponent("docs/LIBRARY.md"), encoding: .utf8)
    let test = try String(contentsOf: packageRoot.appendingPathComponent("Tests/CofferBackupTests/LibraryExampleTests.swift"), encoding: .utf8)
    func between(_ text: String, _ begin: String, _ end: String) -> String? {
        guard let a = text.range(of: begin), let b = text.range(of: end, range: a.upperBound..<text.endIndex) else { return nil }
        return text[a.upperBound..<b.lowerBound].trimmingCharacters(in: .whitespacesAndNewlines)
    }
    let compiled = try #require(between(test, "// EXAMPLE BEGIN", "// EXAMPLE END"))
    let documented = try #require(between(doc, "<!-- EXAMPLE BEGIN -->\n```swift", "```\n<!-- EXAMPLE END -->"))
    #expect(documented == compiled, "docs/LIBRARY.md's example differs from Tests/CofferBackupTests/LibraryExampleTests.swift")
}
