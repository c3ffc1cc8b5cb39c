#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
@_spi(Fuzzing) import CofferCore

/// Fuzz harnesses for what the S3 client reads from an endpoint: XML bodies (listings, errors,
/// multipart and batch-delete results) and the two date forms. See docs/FUZZING.md.
@_spi(Fuzzing)
public enum S3FuzzHarnesses {
    public static var all: [FuzzHarness] { [xml, date] }

    /// Input: an XML body. An accepted document is no deeper than the parser's limit, and the
    /// entity escaping used for request bodies round-trips whatever text the input holds.
    public static let xml = FuzzHarness(
        name: "s3-xml",
        dictionary: ["<?xml version=\"1.0\"?>", "<ListBucketResult>", "</ListBucketResult>", "<Contents>", "</Contents>",
                     "<Key>", "</Key>", "<LastModified>", "</LastModified>", "<Size>", "</Size>", "<Error>", "<Code>",
                     "<![CDATA[", "]]>", "<!--", "-->", "&amp;", "&lt;", "&#x", "&#", ";", "/>", "<a:b>", "</a:b>"].map { Array($0.utf8) },
        seeds: {
            [
                #"<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix>repo/</Prefix><KeyCount>1</KeyCount><IsTruncated>true</IsTruncated><NextContinuationToken>abc</NextContinuationToken><Contents><Key>repo/data/00/0011</Key><LastModified>2026-11-29T02:05:28.000Z</LastModified><ETag>&quot;x&quot;</ETag><Size>12</Size><StorageClass>STANDARD</StorageClass></Contents></ListBucketResult>"#,
                #"<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message><Key>a&amp;b</Key><RequestId>1</RequestId></Error>"#,
                #"<InitiateMultipartUploadResult><Bucket>b</Bucket><Key>k</Key><UploadId>VXBsb2Fk</UploadId></InitiateMultipartUploadResult>"#,
                #"<DeleteResult><Error><Key>k</Key><Code>AccessDenied</Code></Error><!-- note --><Deleted><Key><![CDATA[x<y]]></Key></Deleted></DeleteResult>"#,
                #"<CompleteMultipartUploadResult><ETag>&#34;e&#x22;</ETag><self/></CompleteMultipartUploadResult>"#,
            ].map { Array($0.utf8) }
        },
        run: { data throws(FuzzFinding) in
            let text = String(decoding: data, as: UTF8.self)
            guard XMLElement.decodeEntities(XMLElement.escape(text)) == text else {
                throw FuzzFinding("escaping then decoding entities changed the text")
            }
            let root: XMLElement
            do { root = try XMLElement.parse(data) } catch { return .rejected }
            func depth(_ e: XMLElement) -> Int { 1 + (e.children.map(depth).max() ?? 0) }
            guard depth(root) <= XMLElement.maximumDepth + 1 else { throw FuzzFinding("a document deeper than the limit was accepted") }
            return .accepted
        })

    /// Input: a date as an S3 endpoint may send it, read by both parsers. An accepted date is a
    /// real calendar time in years 1...9999, and printing it back gives the same instant.
    public static let date = FuzzHarness(
        name: "s3-date",
        dictionary: ["Sun, ", " GMT", " UTC", "Feb", "Dec", "29", "31", "60", "9999", "0000", "T", "Z", ".000", "+", "-", ":"].map { Array($0.utf8) },
        seeds: {
            ["Sun, 29 Nov 2026 02:05:28 GMT", "Tue, 29 Feb 2028 23:59:60 GMT", "Fri, 31 Dec 9999 23:59:59 GMT",
             "Sun, 29 Nov 99999999999999999 02:05:28 GMT", "2026-11-29T02:05:28.000Z", "2026-11-29T02:05:28Z",
             "2026-11-29T02:05:28.123456+05:30", "0001-01-01T00:00:00Z"].map { Array($0.utf8) }
        },
        run: { data throws(FuzzFinding) in
            let text = String(decoding: data, as: UTF8.self)
            var accepted = false
            let range = (-62_135_596_800.0 - 86_400)...(253_402_300_800.0 + 86_400)  // years 1...9999, ± a day for ISO offsets
            if let d = S3Date.parseHTTP(text) {
                accepted = true
                guard range.contains(d.timeIntervalSince1970) else { throw FuzzFinding("HTTP date outside years 1...9999") }
                let c = UTCDate(d)
                let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
                let printed = "Mon, \(pad2(c.day)) \(months[c.month - 1]) \(pad4(c.year)) \(pad2(c.hour)):\(pad2(c.minute)):\(pad2(c.second)) GMT"
                guard S3Date.parseHTTP(printed) == d else { throw FuzzFinding("an HTTP date does not print back to the same instant") }
            }
            if let d = S3Date.parseISO8601(text) {
                accepted = true
                guard range.contains(d.timeIntervalSince1970) else { throw FuzzFinding("ISO 8601 date outside years 1...9999") }
                let whole = d.timeIntervalSince1970.rounded(.down)
                let c = UTCDate(Date(timeIntervalSince1970: whole))
                if (1...9999).contains(c.year) {
                    let printed = "\(pad4(c.year))-\(pad2(c.month))-\(pad2(c.day))T\(pad2(c.hour)):\(pad2(c.minute)):\(pad2(c.second))Z"
                    guard S3Date.parseISO8601(printed)?.timeIntervalSince1970 == whole else {
                        throw FuzzFinding("an ISO 8601 date does not print back to the same second")
                    }
                }
            }
            return accepted ? .accepted : .rejected
        })
}
