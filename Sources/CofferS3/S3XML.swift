#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A minimal XML reader for S3's small, flat responses (errors, listings, multipart results).
/// Keeps elements and text; ignores attributes, comments, processing instructions and DOCTYPE.
/// Not a general XML parser, and it does not need to be: S3 bodies are machine-generated.
package struct XMLElement: Sendable {
    package var name: String
    package var children: [XMLElement] = []
    package var text: String = ""

    /// First child named `name` (namespace prefixes ignored).
    package func child(_ name: String) -> XMLElement? { children.first { $0.name == name } }
    package func children(_ name: String) -> [XMLElement] { children.filter { $0.name == name } }
    /// Text of the first child named `name`.
    package subscript(_ name: String) -> String? { child(name)?.text }

    package struct ParseError: Error {}

    /// Deepest nesting accepted. S3's answers are at most four levels deep; the limit keeps a
    /// hostile body (`<a><a><a>…` millions deep) from building a tree whose recursive release
    /// would overflow the stack.
    static let maximumDepth = 32

    /// Parses a document and returns its root element.
    package static func parse(_ data: some Collection<UInt8>) throws(ParseError) -> XMLElement {
        let bytes = Array(data)
        var i = 0
        var stack: [XMLElement] = []
        var root: XMLElement?
        var textBytes: [UInt8] = []

        func flushText() {
            if !stack.isEmpty, !textBytes.isEmpty {
                stack[stack.count - 1].text += decodeEntities(String(decoding: textBytes, as: UTF8.self))
            }
            textBytes.removeAll(keepingCapacity: true)
        }

        while i < bytes.count {
            let b = bytes[i]
            if b != UInt8(ascii: "<") {
                textBytes.append(b)
                i += 1
                continue
            }
            flushText()
            // Comments, CDATA, processing instructions, DOCTYPE.
            if bytes[i...].starts(with: Array("<!--".utf8)) {
                guard let end = find(bytes, Array("-->".utf8), from: i) else { throw ParseError() }
                i = end + 3
                continue
            }
            if bytes[i...].starts(with: Array("<![CDATA[".utf8)) {
                guard let end = find(bytes, Array("]]>".utf8), from: i) else { throw ParseError() }
                if !stack.isEmpty {
                    stack[stack.count - 1].text += String(decoding: bytes[(i + 9)..<end], as: UTF8.self)
                }
                i = end + 3
                continue
            }
            guard let close = bytes[i...].firstIndex(of: UInt8(ascii: ">")) else { throw ParseError() }
            let inner = bytes[(i + 1)..<close]
            i = close + 1
            guard let first = inner.first else { throw ParseError() }
            if first == UInt8(ascii: "?") || first == UInt8(ascii: "!") { continue }
            if first == UInt8(ascii: "/") {
                let name = localName(inner.dropFirst())
                guard let top = stack.popLast(), top.name == name else { throw ParseError() }
                if stack.isEmpty { root = top } else { stack[stack.count - 1].children.append(top) }
                continue
            }
            let selfClosing = inner.last == UInt8(ascii: "/")
            let element = XMLElement(name: localName(selfClosing ? inner.dropLast() : inner))
            if selfClosing {
                if stack.isEmpty { root = element } else { stack[stack.count - 1].children.append(element) }
            } else {
                guard stack.count < maximumDepth else { throw ParseError() }
                stack.append(element)
            }
        }
        guard stack.isEmpty, let root else { throw ParseError() }
        return root
    }

    private static func find(_ bytes: [UInt8], _ needle: [UInt8], from: Int) -> Int? {
        guard bytes.count >= needle.count else { return nil }
        var j = from
        while j + needle.count <= bytes.count {
            if bytes[j..<(j + needle.count)].elementsEqual(needle) { return j }
            j += 1
        }
        return nil
    }

    /// Tag name without attributes or namespace prefix.
    private static func localName(_ tag: ArraySlice<UInt8>) -> String {
        let nameBytes = tag.prefix { $0 != UInt8(ascii: " ") && $0 != UInt8(ascii: "\t") && $0 != UInt8(ascii: "\n") && $0 != UInt8(ascii: "\r") }
        let name = String(decoding: nameBytes, as: UTF8.self)
        if let colon = name.lastIndex(of: ":") { return String(name[name.index(after: colon)...]) }
        return name
    }

    static func decodeEntities(_ s: String) -> String {
        guard s.contains("&") else { return s }
        var out = ""
        var rest = Substring(s)
        while let amp = rest.firstIndex(of: "&") {
            out += rest[..<amp]
            guard let semi = rest[amp...].firstIndex(of: ";") else { out += rest[amp...]; return out }
            let entity = rest[rest.index(after: amp)..<semi]
            switch entity {
            case "amp": out += "&"
            case "lt": out += "<"
            case "gt": out += ">"
            case "quot": out += "\""
            case "apos": out += "'"
            default:
                var scalar: Unicode.Scalar?
                if entity.hasPrefix("#x") || entity.hasPrefix("#X") {
                    scalar = UInt32(entity.dropFirst(2), radix: 16).flatMap(Unicode.Scalar.init)
                } else if entity.hasPrefix("#") {
                    scalar = UInt32(entity.dropFirst()).flatMap(Unicode.Scalar.init)
                }
                if let scalar { out.unicodeScalars.append(scalar) } else { out += rest[amp...semi] }
            }
            rest = rest[rest.index(after: semi)...]
        }
        out += rest
        return out
    }

    package static func escape(_ s: String) -> String {
        var out = ""
        for ch in s {
            switch ch {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&apos;"
            default: out.append(ch)
            }
        }
        return out
    }
}

/// Timestamps S3 sends: ISO 8601 in listings, RFC 1123 in `Last-Modified`.
///
/// Both parsers are strict about shape and range (fixed-width digit fields, month 1...12, a day
/// that exists in its month, hour 0...23, minute 0...59, second 0...60, years 1...9999), so the
/// calendar arithmetic that follows works on small numbers and cannot overflow: a server that sends
/// `Sun, 29 Nov 99999999999999999 02:05:28 GMT` gets `nil` (the caller reports it), never a trap.
enum S3Date {
    /// `2026-11-29T02:05:28.000Z` (fraction optional; `Z` or a `±HH:MM` offset).
    static func parseISO8601(_ s: String) -> Date? {
        let b = Array(s.utf8)
        guard b.count >= 20, b.count <= 64,
              b[4] == UInt8(ascii: "-"), b[7] == UInt8(ascii: "-"), b[10] == UInt8(ascii: "T") || b[10] == UInt8(ascii: "t"),
              b[13] == UInt8(ascii: ":"), b[16] == UInt8(ascii: ":"),
              let y = digits(b[0..<4]), let mo = digits(b[5..<7]), let d = digits(b[8..<10]),
              let h = digits(b[11..<13]), let mi = digits(b[14..<16]), let se = digits(b[17..<19]),
              let base = epochSeconds(year: y, month: mo, day: d, hour: h, minute: mi, second: se) else { return nil }
        var i = 19
        var fraction = 0.0
        if b[i] == UInt8(ascii: ".") {
            let fractionDigits = b[(i + 1)...].prefix { isDigit($0) }
            guard !fractionDigits.isEmpty, let v = Double("0." + String(decoding: fractionDigits, as: UTF8.self)) else { return nil }
            fraction = v
            i += 1 + fractionDigits.count
        }
        guard i < b.count else { return nil }
        var offset = 0
        switch b[i] {
        case UInt8(ascii: "Z"), UInt8(ascii: "z"):
            guard i + 1 == b.count else { return nil }
        case UInt8(ascii: "+"), UInt8(ascii: "-"):
            guard i + 6 == b.count, b[i + 3] == UInt8(ascii: ":"),
                  let oh = digits(b[(i + 1)..<(i + 3)]), let om = digits(b[(i + 4)..<(i + 6)]), oh <= 23, om <= 59 else { return nil }
            offset = (oh * 60 + om) * 60 * (b[i] == UInt8(ascii: "+") ? 1 : -1)
        default:
            return nil
        }
        return Date(timeIntervalSince1970: Double(base - offset) + fraction)
    }

    /// `Sun, 29 Nov 2026 02:05:28 GMT` (RFC 9110's IMF-fixdate; a one-digit day is accepted too).
    static func parseHTTP(_ s: String) -> Date? {
        guard s.utf8.count <= 64 else { return nil }
        let parts = s.split(separator: " ")
        guard parts.count == 6, parts[0].hasSuffix(","), parts[5] == "GMT" || parts[5] == "UTC" else { return nil }
        let months = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
        let dayBytes = Array(parts[1].utf8), yearBytes = Array(parts[3].utf8), t = Array(parts[4].utf8)
        guard (1...2).contains(dayBytes.count), yearBytes.count == 4, t.count == 8,
              t[2] == UInt8(ascii: ":"), t[5] == UInt8(ascii: ":"),
              let d = digits(dayBytes[...]), let mIndex = months.firstIndex(of: parts[2].lowercased()), let y = digits(yearBytes[...]),
              let h = digits(t[0..<2]), let mi = digits(t[3..<5]), let se = digits(t[6..<8]),
              let secs = epochSeconds(year: y, month: mIndex + 1, day: d, hour: h, minute: mi, second: se) else { return nil }
        return Date(timeIntervalSince1970: Double(secs))
    }

    /// Seconds since 1970 for fields within their ranges, `nil` otherwise (so no overflow is possible).
    static func epochSeconds(year: Int, month: Int, day: Int, hour: Int, minute: Int, second: Int) -> Int? {
        guard (1...9999).contains(year), (1...12).contains(month), (0...23).contains(hour),
              (0...59).contains(minute), (0...60).contains(second) else { return nil }
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
        let lengths = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
        guard (1...lengths[month - 1]).contains(day) else { return nil }
        return UTCDate.epochSeconds(year: year, month: month, day: day, hour: hour, minute: minute, second: second)
    }

    private static func isDigit(_ c: UInt8) -> Bool { c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") }

    /// A fixed-width field of ASCII digits only (no sign, no spaces): `Int(_:)` alone would accept
    /// `+1` and `-1`, and an unbounded width could overflow.
    private static func digits(_ field: ArraySlice<UInt8>) -> Int? {
        guard !field.isEmpty, field.count <= 4, field.allSatisfy(isDigit) else { return nil }
        return field.reduce(0) { $0 * 10 + Int($1 - UInt8(ascii: "0")) }
    }
}
