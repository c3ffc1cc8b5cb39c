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
enum S3Date {
    /// `2026-11-29T02:05:28.000Z` (fraction optional).
    static func parseISO8601(_ s: String) -> Date? {
        let b = Array(s.utf8)
        guard b.count >= 20 else { return nil }
        func num(_ r: Range<Int>) -> Int? { Int(String(decoding: b[r], as: UTF8.self)) }
        guard let y = num(0..<4), let mo = num(5..<7), let d = num(8..<10),
              let h = num(11..<13), let mi = num(14..<16), let se = num(17..<19) else { return nil }
        var fraction = 0.0
        if b.count > 20, b[19] == UInt8(ascii: ".") {
            let digits = b[20...].prefix { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
            if let v = Double("0." + String(decoding: digits, as: UTF8.self)) { fraction = v }
        }
        let secs = UTCDate.epochSeconds(year: y, month: mo, day: d, hour: h, minute: mi, second: se)
        return Date(timeIntervalSince1970: Double(secs) + fraction)
    }

    /// `Sun, 29 Nov 2026 02:05:28 GMT`.
    static func parseHTTP(_ s: String) -> Date? {
        let parts = s.split(separator: " ")
        guard parts.count >= 5 else { return nil }
        let months = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
        guard let d = Int(parts[1]), let mIndex = months.firstIndex(of: parts[2].lowercased()), let y = Int(parts[3]) else { return nil }
        let t = parts[4].split(separator: ":")
        guard t.count == 3, let h = Int(t[0]), let mi = Int(t[1]), let se = Int(t[2]) else { return nil }
        return Date(timeIntervalSince1970: Double(UTCDate.epochSeconds(year: y, month: mIndex + 1, day: d, hour: h, minute: mi, second: se)))
    }
}
