@testable import CofferS3
import CofferStorage
import Foundation
import Testing

/// AWS's published S3 signing examples.
///
/// Source: Amazon S3 API Reference, "Authenticating Requests: Using the Authorization Header (AWS
/// Signature Version 4)" → "Examples: Signature Calculations"
/// (https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html), which uses the
/// documentation's example credentials, bucket `examplebucket`, region us-east-1 and the time
/// 20130524T000000Z. The expected values below are copied from that page.
@Suite("SigV4 published examples")
struct SigV4Tests {
    static let credentials = AWSCredentials(accessKeyID: "AKIAIOSFODNN7EXAMPLE",
                                            secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    static let signer = SigV4Signer(credentials: credentials, region: "us-east-1")
    static let date = Date(timeIntervalSince1970: 1_369_353_600)  // 2013-05-24T00:00:00Z
    static let host = "examplebucket.s3.amazonaws.com"

    @Test("amz-date of the examples' time")
    func amzDate() {
        #expect(SigV4Signer.amzDate(Self.date) == "20130524T000000Z")
    }

    @Test("GET Object with a Range header")
    func getObject() {
        let sig = Self.signer.sign(.init(
            method: "GET", encodedPath: "/test.txt",
            headers: [("Host", Self.host), ("Range", "bytes=0-9"),
                      ("x-amz-content-sha256", SigV4Signer.emptyPayloadHash), ("x-amz-date", "20130524T000000Z")],
            payloadHash: SigV4Signer.emptyPayloadHash), date: Self.date)
        #expect(sig.canonicalRequest == """
            GET
            /test.txt

            host:examplebucket.s3.amazonaws.com
            range:bytes=0-9
            x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
            x-amz-date:20130524T000000Z

            host;range;x-amz-content-sha256;x-amz-date
            e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
            """)
        #expect(sig.stringToSign == """
            AWS4-HMAC-SHA256
            20130524T000000Z
            20130524/us-east-1/s3/aws4_request
            7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972
            """)
        #expect(sig.signature == "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
        #expect(sig.authorization == "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
    }

    @Test("PUT Object with a body, a Date header and a storage class")
    func putObject() {
        let body = Data("Welcome to Amazon S3.".utf8)
        let hash = SigV4Signer.payloadHash(body)
        #expect(hash == "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072")
        // The key is "test$file.text": `$` is percent-encoded in the canonical URI.
        let path = "/" + SigV4Signer.uriEncode("test$file.text", encodeSlash: false)
        #expect(path == "/test%24file.text")
        let sig = Self.signer.sign(.init(
            method: "PUT", encodedPath: path,
            headers: [("Host", Self.host), ("Date", "Fri, 24 May 2013 00:00:00 GMT"),
                      ("x-amz-date", "20130524T000000Z"), ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
                      ("x-amz-content-sha256", hash)],
            payloadHash: hash), date: Self.date)
        #expect(sig.signedHeaders == "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class")
        #expect(sig.signature == "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd")
    }

    @Test("GET Bucket Lifecycle (a sub-resource with no value)")
    func getLifecycle() {
        let sig = Self.signer.sign(.init(
            method: "GET", encodedPath: "/", query: [("lifecycle", "")],
            headers: [("Host", Self.host), ("x-amz-date", "20130524T000000Z"),
                      ("x-amz-content-sha256", SigV4Signer.emptyPayloadHash)],
            payloadHash: SigV4Signer.emptyPayloadHash), date: Self.date)
        #expect(sig.canonicalRequest.split(separator: "\n", omittingEmptySubsequences: false)[2] == "lifecycle=")
        #expect(sig.signature == "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543")
    }

    @Test("GET Bucket (List Objects) with query parameters sorted")
    func listObjects() {
        let sig = Self.signer.sign(.init(
            method: "GET", encodedPath: "/", query: [("prefix", "J"), ("max-keys", "2")],
            headers: [("Host", Self.host), ("x-amz-date", "20130524T000000Z"),
                      ("x-amz-content-sha256", SigV4Signer.emptyPayloadHash)],
            payloadHash: SigV4Signer.emptyPayloadHash), date: Self.date)
        #expect(sig.canonicalRequest.split(separator: "\n", omittingEmptySubsequences: false)[2] == "max-keys=2&prefix=J")
        #expect(sig.signature == "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7")
    }

    @Test("a wrong secret, region or payload changes the signature")
    func sensitivity() {
        let request = SigV4Signer.Request(method: "GET", encodedPath: "/test.txt",
                                          headers: [("Host", Self.host), ("x-amz-date", "20130524T000000Z")],
                                          payloadHash: SigV4Signer.emptyPayloadHash)
        let good = Self.signer.sign(request, date: Self.date).signature
        var wrongSecret = Self.signer
        wrongSecret.credentials.secretAccessKey += "x"
        var wrongRegion = Self.signer
        wrongRegion.region = "eu-west-1"
        var otherPayload = request
        otherPayload.payloadHash = SigV4Signer.payloadHash(Data([0]))
        #expect(wrongSecret.sign(request, date: Self.date).signature != good)
        #expect(wrongRegion.sign(request, date: Self.date).signature != good)
        #expect(Self.signer.sign(otherPayload, date: Self.date).signature != good)
    }

    @Test("URI encoding follows AWS's rules")
    func uriEncoding() {
        #expect(SigV4Signer.uriEncode("a-z_A.Z~09", encodeSlash: true) == "a-z_A.Z~09")
        #expect(SigV4Signer.uriEncode("a/b c+d=é", encodeSlash: false) == "a/b%20c%2Bd%3D%C3%A9")
        #expect(SigV4Signer.uriEncode("a/b", encodeSlash: true) == "a%2Fb")
        #expect(SigV4Signer.trimAll("  a   b  ") == "a b")
    }

    @Test("credentials never show their secret")
    func redaction() {
        let c = AWSCredentials(accessKeyID: "AKID", secretAccessKey: "SECRETVALUE", sessionToken: "TOKENVALUE")
        #expect(!"\(c)".contains("SECRETVALUE"))
        #expect(!"\(c)".contains("TOKENVALUE"))
        let config = S3Configuration(bucket: "bucket", credentials: c)
        #expect(!"\(config)".contains("SECRETVALUE"))
        #expect(!String(reflecting: config).contains("SECRETVALUE"))
        var dumped = ""
        dump(config, to: &dumped)
        #expect(!dumped.contains("SECRETVALUE") && !dumped.contains("TOKENVALUE"), "dump() shows no secret")
    }
}

@Suite("S3 configuration")
struct S3ConfigurationTests {
    @Test("URL, environment variables and defaults")
    func environment() throws {
        let env = ["AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "SECRET", "AWS_SESSION_TOKEN": "TOK",
                   "AWS_REGION": "eu-central-1", "AWS_DEFAULT_REGION": "us-west-2",
                   "AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "HOME": "/nonexistent"]
        let c = try S3Configuration.resolve(url: "s3://my-bucket/backups/phone", environment: env)
        #expect(c.bucket == "my-bucket")
        #expect(c.prefix == "backups/phone")
        #expect(c.region == "eu-central-1", "AWS_REGION wins over AWS_DEFAULT_REGION")
        #expect(c.endpoint == "http://127.0.0.1:9000")
        #expect(c.addressing == .path, "custom endpoints use path-style")
        #expect(c.credentials == AWSCredentials(accessKeyID: "AKID", secretAccessKey: "SECRET", sessionToken: "TOK"))
        #expect(c.location == "s3://my-bucket/backups/phone")

        var e2 = env
        e2["AWS_ENDPOINT_URL_S3"] = "http://localhost:4566/"
        e2["AWS_REGION"] = nil
        let c2 = try S3Configuration.resolve(url: "s3://my-bucket", environment: e2)
        #expect(c2.endpoint == "http://localhost:4566", "the S3-specific endpoint variable wins")
        #expect(c2.region == "us-west-2")
        #expect(c2.prefix == "")

        var e3 = env
        e3["AWS_ENDPOINT_URL"] = nil
        e3["AWS_REGION"] = nil
        e3["AWS_DEFAULT_REGION"] = nil
        let c3 = try S3Configuration.resolve(url: "s3://my-bucket/x", environment: e3)
        #expect(c3.endpoint == "https://s3.us-east-1.amazonaws.com")
        #expect(c3.addressing == .virtualHost)
        let c4 = try S3Configuration.resolve(url: "s3://my.dotted.bucket/x?region=eu-west-1", environment: e3)
        #expect(c4.addressing == .path, "dotted bucket names use path-style")
        #expect(c4.endpoint == "https://s3.eu-west-1.amazonaws.com")
        let c5 = try S3Configuration.resolve(url: "s3://my-bucket/x?addressing=path", environment: e3)
        #expect(c5.addressing == .path)
    }

    @Test("malformed URLs and missing credentials are clear errors")
    func errors() {
        let env = ["AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "SECRET", "HOME": "/nonexistent"]
        for url in ["s3://", "s3://Bad_Bucket/x", "s3://ab/x", "s3://bucket/UPPER", "s3://bucket/x?nope=1", "http://bucket/x"] {
            #expect(throws: StorageError.self, "\(url)") { try S3Configuration.resolve(url: url, environment: env) }
        }
        do {
            _ = try S3Configuration.resolve(url: "s3://bucket/x", environment: ["HOME": "/nonexistent"])
            Issue.record("resolved without credentials")
        } catch {
            #expect(error.code == .accessDenied)
            #expect(error.message.contains("AWS_ACCESS_KEY_ID"))
        }
    }

    @Test("shared credentials and config files with AWS_PROFILE, as the AWS CLI reads them")
    func profiles() async throws {
        try await withTemporaryFolder { dir in
            try """
            [default]
            aws_access_key_id = DEFAULTKEY
            aws_secret_access_key = defaultsecret

            # a comment
            [work]
            aws_access_key_id=WORKKEY
            aws_secret_access_key = work/secret+x
            aws_session_token = worktoken
            """.write(toFile: dir + "/credentials", atomically: true, encoding: .utf8)
            try """
            [default]
            region = ap-south-1

            [profile work]
            region = eu-north-1
            endpoint_url = http://127.0.0.1:9999
            s3 =
              addressing_style = virtual
            """.write(toFile: dir + "/config", atomically: true, encoding: .utf8)
            let base = ["AWS_SHARED_CREDENTIALS_FILE": dir + "/credentials", "AWS_CONFIG_FILE": dir + "/config"]
            let d = try S3Configuration.resolve(url: "s3://bucket/x", environment: base)
            #expect(d.credentials == AWSCredentials(accessKeyID: "DEFAULTKEY", secretAccessKey: "defaultsecret"))
            #expect(d.region == "ap-south-1")
            var work = base
            work["AWS_PROFILE"] = "work"
            let w = try S3Configuration.resolve(url: "s3://bucket/x", environment: work)
            #expect(w.credentials == AWSCredentials(accessKeyID: "WORKKEY", secretAccessKey: "work/secret+x", sessionToken: "worktoken"))
            #expect(w.region == "eu-north-1")
            #expect(w.endpoint == "http://127.0.0.1:9999")
            #expect(w.addressing == .virtualHost, "the profile's s3.addressing_style is honoured")
            // Environment variables win over files.
            work["AWS_ACCESS_KEY_ID"] = "ENVKEY"
            work["AWS_SECRET_ACCESS_KEY"] = "envsecret"
            #expect(try S3Configuration.resolve(url: "s3://bucket/x", environment: work).credentials.accessKeyID == "ENVKEY")
            // HOME/.aws is the default place.
            try FileManager.default.createDirectory(atPath: dir + "/home/.aws", withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: dir + "/credentials", toPath: dir + "/home/.aws/credentials")
            let h = try S3Configuration.resolve(url: "s3://bucket/x", environment: ["HOME": dir + "/home"])
            #expect(h.credentials.accessKeyID == "DEFAULTKEY")
        }
    }

    @Test("endpoint parsing and the Host header")
    func endpoints() {
        #expect(EndpointParts("http://127.0.0.1:9000")?.hostHeader == "127.0.0.1:9000")
        #expect(EndpointParts("https://s3.amazonaws.com")?.hostHeader == "s3.amazonaws.com")
        #expect(EndpointParts("https://s3.amazonaws.com:443")?.hostHeader == "s3.amazonaws.com")
        #expect(EndpointParts("http://[::1]:9000")?.host == "[::1]")
        #expect(EndpointParts("ftp://x") == nil)
        #expect(EndpointParts("http://") == nil)
    }
}

@Suite("S3 XML and dates")
struct S3XMLTests {
    @Test("error, listing and entity decoding")
    func parse() throws {
        let xml = """
        <?xml version="1.0" encoding="UTF-8"?>
        <ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><IsTruncated>true</IsTruncated>
        <Contents><Key>a&amp;b/&lt;c&gt;</Key><LastModified>2026-11-29T02:05:28.250Z</LastModified><Size>12</Size><Owner/></Contents>
        <Contents><Key>d</Key><Size>0</Size></Contents>
        <NextContinuationToken>tok/+=</NextContinuationToken></ListBucketResult>
        """
        let root = try XMLElement.parse(Array(xml.utf8))
        #expect(root.name == "ListBucketResult")
        #expect(root.children("Contents").count == 2)
        #expect(root.children("Contents")[0]["Key"] == "a&b/<c>")
        #expect(root["NextContinuationToken"] == "tok/+=")
        #expect(root["IsTruncated"] == "true")
        #expect(throws: XMLElement.ParseError.self) { try XMLElement.parse(Array("<a><b></a>".utf8)) }
        #expect(throws: XMLElement.ParseError.self) { try XMLElement.parse(Array("<a>".utf8)) }
        #expect(XMLElement.escape("a&<\"'>") == "a&amp;&lt;&quot;&apos;&gt;")
    }

    @Test("mutated and truncated documents never crash the parser")
    func robustness() {
        let samples = [
            #"<?xml version="1.0"?><ListBucketResult><Contents><Key>a&amp;b</Key><Size>1</Size></Contents><IsTruncated>false</IsTruncated></ListBucketResult>"#,
            #"<Error><Code>NoSuchKey</Code><Message>The key &#x41; &#65; &bogus; does not exist</Message><!-- c --><![CDATA[<x>]]></Error>"#,
            #"<InitiateMultipartUploadResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><UploadId>abc</UploadId></InitiateMultipartUploadResult>"#,
        ]
        var g = SystemRandomNumberGenerator()
        var parsed = 0
        for _ in 0..<3000 {
            var bytes = Array(samples.randomElement(using: &g)!.utf8)
            for _ in 0..<Int.random(in: 1...4, using: &g) {
                switch Int.random(in: 0..<4, using: &g) {
                case 0: bytes = Array(bytes.prefix(Int.random(in: 0...bytes.count, using: &g)))
                case 1 where !bytes.isEmpty: bytes[Int.random(in: 0..<bytes.count, using: &g)] = UInt8.random(in: 0...255, using: &g)
                case 2: bytes.insert(Array("<>&;/!?[]".utf8).randomElement(using: &g)!, at: Int.random(in: 0...bytes.count, using: &g))
                default: if !bytes.isEmpty { bytes.remove(at: Int.random(in: 0..<bytes.count, using: &g)) }
                }
            }
            if (try? XMLElement.parse(bytes)) != nil { parsed += 1 }
        }
        #expect(parsed < 3000, "most mutations are rejected, none crash")
    }

    @Test("timestamps")
    func dates() {
        #expect(S3Date.parseISO8601("2026-11-29T02:05:28.250Z")?.timeIntervalSince1970 == 1_795_917_928.25)
        #expect(S3Date.parseHTTP("Sun, 29 Nov 2026 02:05:28 GMT")?.timeIntervalSince1970 == 1_795_917_928)
        #expect(S3Date.parseHTTP("Fri, 24 May 2013 00:00:00 GMT")?.timeIntervalSince1970 == 1_369_353_600)
        #expect(S3Date.parseISO8601("garbage") == nil)
    }
}
