#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CofferS3

/// One resource of a `207 Multi-Status` PROPFIND answer.
package struct DAVResource: Sendable, Equatable {
    /// The decoded path segments of its `href`.
    package var segments: [String]
    package var isCollection: Bool
    package var size: Int?
    package var modified: Date?
}

package enum MultiStatus {
    /// The body Coffer sends with PROPFIND: only the properties it reads.
    package static let request = """
    <?xml version="1.0" encoding="utf-8"?>
    <D:propfind xmlns:D="DAV:"><D:prop><D:resourcetype/><D:getcontentlength/><D:getlastmodified/></D:prop></D:propfind>
    """

    /// Reads a multistatus body. Hrefs may be absolute URLs or paths, percent-encoded or not;
    /// entries whose href cannot be read are skipped. `nil` for a body that is not a multistatus.
    package static func parse(_ body: some Collection<UInt8>) -> [DAVResource]? {
        guard let root = try? XMLElement.parse(body), root.name == "multistatus" else { return nil }
        var out: [DAVResource] = []
        for response in root.children("response") {
            guard let href = response["href"].map(trim), let segments = pathSegments(href) else { continue }
            var resource = DAVResource(segments: segments, isCollection: href.hasSuffix("/"), size: nil, modified: nil)
            for propstat in response.children("propstat") {
                // Only properties the server found (200); 404 blocks list the ones it lacks.
                if let status = propstat["status"], !status.contains(" 200") { continue }
                guard let prop = propstat.child("prop") else { continue }
                if let type = prop.child("resourcetype") { resource.isCollection = type.child("collection") != nil }
                if let length = prop["getcontentlength"].map(trim), let n = Int(length), n >= 0 { resource.size = n }
                if let modified = prop["getlastmodified"].map(trim) { resource.modified = HTTPDate.parse(modified) }
            }
            out.append(resource)
        }
        return out
    }

    static func trim(_ s: String) -> String {
        String(s.drop { $0 == " " || $0 == "\n" || $0 == "\r" || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\n" || $0 == "\r" || $0 == "\t" }.reversed())
    }

    /// The decoded segments of an href's path (`http://h/a%20b/c/` or `/a%20b/c/` -> `["a b", "c"]`).
    static func pathSegments(_ href: String) -> [String]? {
        var path = Substring(href)
        if let scheme = path.firstRange(of: "://") {
            let afterScheme = path[scheme.upperBound...]
            path = afterScheme.firstIndex(of: "/").map { afterScheme[$0...] } ?? "/"
        }
        if let q = path.firstIndex(where: { $0 == "?" || $0 == "#" }) { path = path[..<q] }
        var out: [String] = []
        for raw in path.split(separator: "/") {
            guard let segment = WebDAVPath.percentDecode(raw) else { return nil }
            out.append(segment)
        }
        return out
    }
}

/// HTTP dates (RFC 9110 section 5.6.7): IMF-fixdate, the obsolete RFC 850 form and asctime. Every
/// field is range-checked before any arithmetic, so hostile values give `nil`, never a trap.
package enum HTTPDate {
    package static func parse(_ text: String) -> Date? {
        guard text.utf8.count <= 64 else { return nil }
        let months = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
        let words = text.split(whereSeparator: { $0 == " " || $0 == "," }).map(String.init)
        var day: Int?, month: Int?, year: Int?, time: [Int]?
        if words.count >= 4, words[1].contains("-") {
            // Sunday, 06-Nov-94 08:49:37 GMT
            let dmy = words[1].split(separator: "-")
            guard dmy.count == 3 else { return nil }
            day = small(dmy[0]); month = months.firstIndex(of: dmy[1].lowercased()).map { $0 + 1 }
            if let y = small(dmy[2]) { year = y < 100 ? (y < 70 ? 2000 + y : 1900 + y) : y }
            time = clock(words[2])
        } else if words.count >= 5, let m = months.firstIndex(of: words[1].lowercased()) {
            // Sun Nov  6 08:49:37 1994 (asctime)
            month = m + 1; day = small(words[2]); time = clock(words[3]); year = small(words[4])
        } else if words.count >= 5 {
            // Sun, 06 Nov 1994 08:49:37 GMT
            day = small(words[1]); month = months.firstIndex(of: words[2].lowercased()).map { $0 + 1 }
            year = small(words[3]); time = clock(words[4])
        }
        guard let day, let month, let year, let time, (1...31).contains(day), (1970...9999).contains(year),
              time[0] <= 23, time[1] <= 59, time[2] <= 60 else { return nil }
        let seconds = UTCDate.epochSeconds(year: year, month: month, day: day, hour: time[0], minute: time[1], second: time[2])
        return Date(timeIntervalSince1970: Double(seconds))
    }

    /// A non-negative number of at most 4 digits.
    private static func small(_ s: some StringProtocol) -> Int? {
        guard (1...4).contains(s.utf8.count), s.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else { return nil }
        return Int(s)
    }

    private static func clock(_ s: String) -> [Int]? {
        let parts = s.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 3 else { return nil }
        let values = parts.compactMap { $0.utf8.count == 2 ? small($0) : nil }
        return values.count == 3 ? values : nil
    }
}
