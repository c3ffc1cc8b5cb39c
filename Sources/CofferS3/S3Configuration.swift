#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CofferStorage

/// How the bucket appears in request URLs.
public enum S3Addressing: String, Sendable {
    /// `https://bucket.s3.region.amazonaws.com/key`: AWS's default.
    case virtualHost = "virtual"
    /// `https://endpoint/bucket/key`: needed by most self-hosted servers and IP endpoints.
    case path
}

/// Everything needed to reach one repository in a bucket.
public struct S3Configuration: Sendable, CustomStringConvertible {
    public var bucket: String
    /// Key prefix without leading or trailing `/` (`""` for the bucket root).
    public var prefix: String
    /// `scheme://host[:port]` with no path, for example `http://127.0.0.1:9000`.
    public var endpoint: String
    public var region: String
    public var credentials: AWSCredentials
    public var addressing: S3Addressing
    public var options: S3Options

    public init(bucket: String, prefix: String = "", endpoint: String? = nil, region: String = "us-east-1",
                credentials: AWSCredentials, addressing: S3Addressing? = nil, options: S3Options = S3Options()) {
        self.bucket = bucket
        self.prefix = prefix.trimmingSlashes()
        self.region = region
        self.credentials = credentials
        let ep = (endpoint ?? "https://s3.\(region).amazonaws.com").trimmingTrailingSlashes()
        self.endpoint = ep
        self.addressing = addressing ?? S3Configuration.defaultAddressing(endpoint: ep, bucket: bucket,
                                                                       custom: endpoint != nil)
        self.options = options
    }

    /// Path-style for custom endpoints, IP hosts and bucket names with dots (TLS wildcard
    /// certificates do not cover them); virtual-hosted for AWS itself.
    static func defaultAddressing(endpoint: String, bucket: String, custom: Bool) -> S3Addressing {
        if custom { return .path }
        if bucket.contains(".") { return .path }
        if let host = EndpointParts(endpoint)?.host, host.isIPAddress || host == "localhost" { return .path }
        return .virtualHost
    }

    /// `s3://bucket/prefix`, never credentials.
    public var location: String { prefix.isEmpty ? "s3://\(bucket)" : "s3://\(bucket)/\(prefix)" }

    public var description: String {
        "S3Configuration(\(location), endpoint: \(endpoint), region: \(region), addressing: \(addressing.rawValue), credentials: \(credentials))"
    }

    /// Builds a configuration from a repository URL and the environment, the way the AWS CLI reads them.
    ///
    /// URL: `s3://BUCKET[/PREFIX][?endpoint=URL&region=R&addressing=path|virtual]`.
    /// Environment: `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`, `AWS_REGION` / `AWS_DEFAULT_REGION`,
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_PROFILE`,
    /// `AWS_SHARED_CREDENTIALS_FILE`, `AWS_CONFIG_FILE`, and `HOME` for `~/.aws/`.
    /// - Throws: ``StorageError`` `.invalidName` for a malformed URL, `.accessDenied` when no
    ///   credentials are found.
    public static func resolve(url: String, environment: [String: String]) throws(StorageError) -> S3Configuration {
        guard url.hasPrefix("s3://") else {
            throw StorageError(.invalidName, message: "\"\(url)\" is not an S3 URL: expected s3://BUCKET/PREFIX")
        }
        var rest = String(url.dropFirst(5))
        var params: [String: String] = [:]
        if let q = rest.firstIndex(of: "?") {
            for pair in rest[rest.index(after: q)...].split(separator: "&") {
                let kv = pair.split(separator: "=", maxSplits: 1)
                let key = String(kv[0])
                let value = kv.count > 1 ? String(kv[1]).removingPercentEncodingLenient() : ""
                params[key] = value
            }
            rest = String(rest[..<q])
        }
        let parts = rest.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        let bucket = String(parts[0])
        guard isValidBucketName(bucket) else {
            throw StorageError(.invalidName, message: "\"\(bucket)\" is not a valid S3 bucket name (3-63 characters: a-z, 0-9, '.', '-')")
        }
        let prefix = parts.count > 1 ? String(parts[1]).trimmingSlashes() : ""
        if !prefix.isEmpty && !ObjectName.isValid(prefix) {
            throw StorageError(.invalidName, message: "\"\(prefix)\" is not a valid repository prefix (segments of a-z, 0-9, '.', '_', '-')")
        }
        for key in params.keys where !["endpoint", "region", "addressing", "multipart-mib"].contains(key) {
            throw StorageError(.invalidName, message: "unknown S3 URL option \"\(key)\" (known: endpoint, region, addressing, multipart-mib)")
        }
        var options = S3Options()
        if let m = params["multipart-mib"] {
            // Objects above this many MiB go up in parts of this size (S3's minimum part is 5 MiB).
            guard let mib = Int(m), (5...5120).contains(mib) else {
                throw StorageError(.invalidName, message: "multipart-mib must be a whole number of MiB from 5 to 5120, not \"\(m)\"")
            }
            options.multipartThreshold = mib << 20
            options.partSize = mib << 20
        }

        let profileName = environment["AWS_PROFILE"] ?? environment["AWS_DEFAULT_PROFILE"] ?? "default"
        let home = environment["HOME"] ?? ""
        let configPath = environment["AWS_CONFIG_FILE"] ?? "\(home)/.aws/config"
        let credentialsPath = environment["AWS_SHARED_CREDENTIALS_FILE"] ?? "\(home)/.aws/credentials"
        let config = AWSINIFile.load(path: configPath)
        let shared = AWSINIFile.load(path: credentialsPath)
        // In the config file profiles are `[profile NAME]` except `[default]`.
        let configSection = config?.section(profileName == "default" ? "default" : "profile \(profileName)")
            ?? config?.section(profileName)
        let credentialsSection = shared?.section(profileName)

        func nonEmpty(_ v: String?) -> String? { (v?.isEmpty ?? true) ? nil : v }

        let region = nonEmpty(params["region"]) ?? nonEmpty(environment["AWS_REGION"])
            ?? nonEmpty(environment["AWS_DEFAULT_REGION"]) ?? nonEmpty(configSection?["region"]) ?? "us-east-1"
        let endpoint = nonEmpty(params["endpoint"]) ?? nonEmpty(environment["AWS_ENDPOINT_URL_S3"])
            ?? nonEmpty(environment["AWS_ENDPOINT_URL"]) ?? nonEmpty(configSection?["endpoint_url"])
        if let endpoint, EndpointParts(endpoint) == nil {
            throw StorageError(.invalidName, message: "endpoint \"\(endpoint)\" is not an http:// or https:// URL")
        }

        var addressing: S3Addressing?
        if let a = nonEmpty(params["addressing"]) ?? nonEmpty(configSection?["s3.addressing_style"]) {
            switch a {
            case "path": addressing = .path
            case "virtual": addressing = .virtualHost
            case "auto": addressing = nil
            default:
                throw StorageError(.invalidName, message: "addressing must be path or virtual, not \"\(a)\"")
            }
        }

        let credentials: AWSCredentials
        if let id = nonEmpty(environment["AWS_ACCESS_KEY_ID"]), let secret = nonEmpty(environment["AWS_SECRET_ACCESS_KEY"]) {
            credentials = AWSCredentials(accessKeyID: id, secretAccessKey: secret,
                                         sessionToken: nonEmpty(environment["AWS_SESSION_TOKEN"]))
        } else if let s = credentialsSection, let id = nonEmpty(s["aws_access_key_id"]), let secret = nonEmpty(s["aws_secret_access_key"]) {
            credentials = AWSCredentials(accessKeyID: id, secretAccessKey: secret, sessionToken: nonEmpty(s["aws_session_token"]))
        } else if let s = configSection, let id = nonEmpty(s["aws_access_key_id"]), let secret = nonEmpty(s["aws_secret_access_key"]) {
            credentials = AWSCredentials(accessKeyID: id, secretAccessKey: secret, sessionToken: nonEmpty(s["aws_session_token"]))
        } else {
            throw StorageError(.accessDenied, message: "no S3 credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or put a [\(profileName)] profile in \(credentialsPath)")
        }

        return S3Configuration(bucket: bucket, prefix: prefix, endpoint: endpoint, region: region,
                               credentials: credentials, addressing: addressing, options: options)
    }

    static func isValidBucketName(_ name: String) -> Bool {
        guard (3...63).contains(name.utf8.count) else { return false }
        for b in name.utf8 {
            switch b {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "."), UInt8(ascii: "-"):
                continue
            default:
                return false
            }
        }
        return name.first != "." && name.first != "-" && name.last != "." && name.last != "-"
    }
}

/// A request failed in a way retrying may fix, and is retried after `delay`.
public struct S3RetryNotice: Sendable {
    /// The endpoint URL (no credentials).
    public var endpoint: String
    /// What went wrong, e.g. "refused the connection" or the error message.
    public var problem: String
    /// True when the endpoint refused the connection (nothing listens there).
    public var refused: Bool
    /// The attempt about to be made (2 for the first retry) and the most attempts there will be.
    public var attempt: Int
    public var maxAttempts: Int
    public var delay: Duration
}

/// Tuning knobs; the defaults suit real deployments.
public struct S3Options: Sendable {
    /// Objects larger than this go up as a multipart upload.
    public var multipartThreshold: Int = 16 << 20
    /// Size of each part (S3 requires at least 5 MiB for all but the last).
    public var partSize: Int = 16 << 20
    /// The most requests in flight at once (also the connection pool's size).
    public var maxConcurrentRequests: Int = 16
    /// Attempts per request, the first included, for transient failures.
    public var maxAttempts: Int = 8
    /// First backoff delay; doubled per attempt with full jitter, capped by `maxBackoff`.
    public var initialBackoff: Duration = .milliseconds(100)
    public var maxBackoff: Duration = .seconds(10)
    /// Connect timeout.
    public var connectTimeout: Duration = .seconds(10)
    /// How long a connection may sit without receiving a byte before the request is retried.
    public var readTimeout: Duration = .seconds(60)
    /// The most time one request may spend failing and being retried, counted from its first
    /// failure: no retry starts that would end after it. nil: only `maxAttempts` limits retries.
    public var retryBudget: Duration? = .seconds(60)
    /// Told before each retry (the CLI prints it), so that a failing endpoint is never silent.
    public var onRetry: (@Sendable (S3RetryNotice) -> Void)?

    public init() {}
}

/// `scheme`, `host` and `port` of an endpoint URL.
struct EndpointParts {
    var scheme: String
    var host: String
    var port: Int?

    init?(_ url: String) {
        let lower = url.lowercased()
        let rest: Substring
        if lower.hasPrefix("http://") { scheme = "http"; rest = url.dropFirst(7) }
        else if lower.hasPrefix("https://") { scheme = "https"; rest = url.dropFirst(8) }
        else { return nil }
        let hostPort = rest.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
        guard !hostPort.isEmpty else { return nil }
        if hostPort.hasPrefix("[") {  // IPv6 literal
            guard let close = hostPort.firstIndex(of: "]") else { return nil }
            host = String(hostPort[...close])
            let after = hostPort[hostPort.index(after: close)...]
            if after.hasPrefix(":") { guard let p = Int(after.dropFirst()) else { return nil }; port = p }
        } else if let colon = hostPort.lastIndex(of: ":") {
            host = String(hostPort[..<colon])
            guard let p = Int(hostPort[hostPort.index(after: colon)...]) else { return nil }
            port = p
        } else {
            host = hostPort
        }
        guard !host.isEmpty else { return nil }
    }

    /// The `Host` header value: the port only when it is not the scheme's default.
    var hostHeader: String {
        if let port, !(scheme == "http" && port == 80), !(scheme == "https" && port == 443) {
            return "\(host):\(port)"
        }
        return host
    }
}

extension StringProtocol {
    func trimmedWS() -> String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" || f == "\r" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" || l == "\r" { s = s.dropLast() }
        return String(s)
    }
}

extension String {
    var isIPAddress: Bool {
        if hasPrefix("[") { return true }
        let parts = split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts.allSatisfy { UInt8($0) != nil }
    }

    func trimmingSlashes() -> String {
        var s = Substring(self)
        while s.hasPrefix("/") { s = s.dropFirst() }
        while s.hasSuffix("/") { s = s.dropLast() }
        return String(s)
    }

    func trimmingTrailingSlashes() -> String {
        var s = Substring(self)
        while s.hasSuffix("/") { s = s.dropLast() }
        return String(s)
    }

    func removingPercentEncodingLenient() -> String {
        var bytes: [UInt8] = []
        var it = Array(utf8)[...]
        while let b = it.popFirst() {
            if b == UInt8(ascii: "%"), it.count >= 2,
               let v = UInt8(String(decoding: it.prefix(2), as: UTF8.self), radix: 16) {
                bytes.append(v)
                it = it.dropFirst(2)
            } else {
                bytes.append(b)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// The AWS CLI's INI files (`~/.aws/config`, `~/.aws/credentials`): `[section]`, `key = value`,
/// `#`/`;` comments, and indented `key = value` lines under a `s3 =` line for nested settings
/// (stored as `s3.key`).
struct AWSINIFile {
    var sections: [String: [String: String]] = [:]

    static func load(path: String) -> AWSINIFile? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        return AWSINIFile(text: String(decoding: data, as: UTF8.self))
    }

    init(text: String) {
        var current: String?
        var nestedParent: String?
        for rawLine in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
            let indented = rawLine.first == " " || rawLine.first == "\t"
            let line = rawLine.trimmedWS()
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            if line.hasPrefix("[") && line.hasSuffix("]") {
                let name = line.dropFirst().dropLast().trimmedWS()
                    .split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
                current = name
                nestedParent = nil
                if sections[name] == nil { sections[name] = [:] }
                continue
            }
            guard let section = current, let eq = line.firstIndex(of: "=") else { continue }
            let key = line[..<eq].trimmedWS().lowercased()
            let value = line[line.index(after: eq)...].trimmedWS()
            if indented, let parent = nestedParent {
                sections[section]?["\(parent).\(key)"] = value
            } else if value.isEmpty {
                nestedParent = key
            } else {
                nestedParent = nil
                sections[section]?[key] = value
            }
        }
    }

    func section(_ name: String) -> [String: String]? { sections[name] }
}
