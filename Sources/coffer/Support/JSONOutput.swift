import Foundation

/// `--json` output: one JSON document on stdout, keys sorted so that scripts and diffs are stable.
enum JSONOutput {
    static func encoder() -> JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        e.dateEncodingStrategy = .iso8601
        return e
    }

    static func print<T: Encodable>(_ value: T) throws {
        let data = try encoder().encode(value)
        Terminal.out(String(decoding: data, as: UTF8.self) + "\n")
    }
}
