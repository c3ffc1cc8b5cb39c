#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CofferStorage

/// A user name and password for a WebDAV server. `description` never shows the password.
public struct WebDAVCredentials: Sendable, CustomStringConvertible {
    public var user: String
    public var password: String

    public init(user: String, password: String) {
        self.user = user
        self.password = password
    }

    public var description: String { "WebDAVCredentials(user: \(user), password: <redacted>)" }
}

/// Tuning knobs; the defaults suit real servers.
public struct WebDAVOptions: Sendable {
    /// The most requests in flight at once (also the connection pool's size).
    public var maxConcurrentRequests: Int = 8
    /// Attempts per request, the first included, for transient failures.
    public var maxAttempts: Int = 8
    /// First backoff delay; doubled per attempt with full jitter, capped by `maxBackoff`.
    public var initialBackoff: Duration = .milliseconds(100)
    public var maxBackoff: Duration = .seconds(10)
    /// Connect timeout.
    public var connectTimeout: Duration = .seconds(10)
    /// How long a connection may sit without receiving a byte before the request is retried.
    public var readTimeout: Duration = .seconds(60)

    public init() {}
}

/// Everything needed to reach one repository on a WebDAV server.
public struct WebDAVConfiguration: Sendable, CustomStringConvertible {
    /// `http` or `https`.
    public var scheme: String
    public var host: String
    public var port: Int
    /// The repository folder's path segments, decoded (`["remote.php", "dav", "files", "alice", "backups"]`).
    public var rootSegments: [String]
    public var credentials: WebDAVCredentials?
    public var options: WebDAVOptions
    /// The string shown to users; `nil` means `webdav[s]://HOST:PORT/PATH`.
    public var displayLocation: String?

    public init(scheme: String = "http", host: String, port: Int? = nil, rootSegments: [String],
                credentials: WebDAVCredentials?, options: WebDAVOptions = WebDAVOptions(), displayLocation: String? = nil) {
        self.scheme = scheme
        self.host = host
        self.port = port ?? (scheme == "https" ? 443 : 80)
        self.rootSegments = rootSegments
        self.credentials = credentials
        self.options = options
        self.displayLocation = displayLocation
    }

    /// `webdav://host:port/path` (or `webdavs://`), never credentials.
    public var location: String {
        if let displayLocation { return displayLocation }
        let defaultPort = scheme == "https" ? 443 : 80
        let hostPart = host.contains(":") ? "[\(host)]" : host
        let portPart = port == defaultPort ? "" : ":\(port)"
        return "\(scheme == "https" ? "webdavs" : "webdav")://\(hostPart)\(portPart)/" + rootSegments.map(WebDAVPath.encodeSegment).joined(separator: "/")
    }

    public var description: String {
        "WebDAVConfiguration(\(location), credentials: \(credentials.map { "\($0)" } ?? "none"))"
    }

    /// Builds a configuration from `webdav://HOST[:PORT]/PATH` or `webdavs://...` and the environment.
    ///
    /// Credentials, first match wins (never from the URL, which gets printed):
    /// 1. `COFFER_WEBDAV_USER` + `COFFER_WEBDAV_PASSWORD`;
    /// 2. `COFFER_WEBDAV_USER` + the first line `COFFER_WEBDAV_PASSWORD_COMMAND` prints (run by `/bin/sh -c`);
    /// 3. the netrc file `COFFER_WEBDAV_NETRC` (default `~/.netrc`): `machine HOST login USER password PASS`
    ///    (a `default` entry counts when no machine matches);
    /// 4. none: the server must allow anonymous access (a 401 then names these settings).
    /// - Throws: ``StorageError`` `.invalidName` for a malformed URL or a URL carrying credentials,
    ///   `.accessDenied` when the password command fails.
    public static func resolve(url: String, environment: [String: String]) throws(StorageError) -> WebDAVConfiguration {
        let scheme: String
        let rest: Substring
        if url.hasPrefix("webdav://") {
            scheme = "http"; rest = url.dropFirst(9)
        } else if url.hasPrefix("webdavs://") {
            scheme = "https"; rest = url.dropFirst(10)
        } else {
            throw StorageError(.invalidName, message: "\"\(url)\" is not a WebDAV URL: expected webdav://HOST[:PORT]/PATH or webdavs://HOST[:PORT]/PATH")
        }
        if rest.contains("?") || rest.contains("#") {
            throw StorageError(.invalidName, message: "a WebDAV repository URL takes no ?query or #fragment: expected webdav://HOST[:PORT]/PATH")
        }
        let slash = rest.firstIndex(of: "/") ?? rest.endIndex
        let authority = rest[..<slash]
        if authority.contains("@") {
            // Never print a password: refuse it here rather than echo the URL back.
            throw StorageError(.invalidName, message: "a WebDAV repository URL must not carry a user or password (it is printed in messages): set COFFER_WEBDAV_USER and COFFER_WEBDAV_PASSWORD, COFFER_WEBDAV_PASSWORD_COMMAND, or a netrc entry")
        }
        guard let (host, port) = parseAuthority(authority) else {
            throw StorageError(.invalidName, message: "\"\(authority)\" is not a valid HOST[:PORT] in the WebDAV URL")
        }
        var segments: [String] = []
        for raw in rest[slash...].split(separator: "/") {
            guard let decoded = WebDAVPath.percentDecode(raw), decoded != ".", decoded != "..", !decoded.contains("/") else {
                throw StorageError(.invalidName, message: "the WebDAV URL's path segment \"\(raw)\" is not valid (no '.', '..', encoded '/' or bad %-escapes)")
            }
            segments.append(decoded)
        }
        let credentials = try resolveCredentials(host: host, environment: environment)
        return WebDAVConfiguration(scheme: scheme, host: host, port: port, rootSegments: segments, credentials: credentials)
    }

    static func parseAuthority(_ authority: Substring) -> (String, Int?)? {
        var host: Substring
        var portText: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { return nil }
            host = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            if after.hasPrefix(":") { portText = after.dropFirst() } else if !after.isEmpty { return nil }
        } else if let colon = authority.lastIndex(of: ":") {
            host = authority[..<colon]
            portText = authority[authority.index(after: colon)...]
        } else {
            host = authority
        }
        guard !host.isEmpty, host.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" || $0 == ":" || $0 == "_" }) else { return nil }
        var port: Int?
        if let portText {
            guard portText.count <= 5, let p = Int(portText), (1...65535).contains(p) else { return nil }
            port = p
        }
        return (String(host).lowercased(), port)
    }

    static func resolveCredentials(host: String, environment: [String: String]) throws(StorageError) -> WebDAVCredentials? {
        func nonEmpty(_ v: String?) -> String? { (v?.isEmpty ?? true) ? nil : v }
        if let user = nonEmpty(environment["COFFER_WEBDAV_USER"]) {
            if let password = environment["COFFER_WEBDAV_PASSWORD"] {
                return WebDAVCredentials(user: user, password: password)
            }
            if let command = nonEmpty(environment["COFFER_WEBDAV_PASSWORD_COMMAND"]) {
                return WebDAVCredentials(user: user, password: try PasswordCommand.run(command, environment: environment))
            }
        }
        let home = environment["HOME"] ?? ""
        let netrcPath = nonEmpty(environment["COFFER_WEBDAV_NETRC"]) ?? "\(home)/.netrc"
        if let data = FileManager.default.contents(atPath: netrcPath), let entry = Netrc.parse(data).entry(for: host) {
            return entry
        }
        if nonEmpty(environment["COFFER_WEBDAV_USER"]) != nil {
            throw StorageError(.accessDenied, message: "COFFER_WEBDAV_USER is set but no password: set COFFER_WEBDAV_PASSWORD or COFFER_WEBDAV_PASSWORD_COMMAND, or add a netrc entry for \(host)")
        }
        return nil
    }
}

/// A netrc file (`machine HOST login USER password PASS`, entries on one or several lines).
struct Netrc {
    var machines: [(host: String, credentials: WebDAVCredentials)] = []
    var fallback: WebDAVCredentials?

    static func parse(_ data: Data) -> Netrc {
        var out = Netrc()
        let tokens = String(decoding: data, as: UTF8.self).split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }).map(String.init)
        var i = 0
        var current: (host: String?, isDefault: Bool, user: String?, password: String?)?
        func flush() {
            guard let c = current, let user = c.user, let password = c.password else { return }
            let creds = WebDAVCredentials(user: user, password: password)
            if c.isDefault { if out.fallback == nil { out.fallback = creds } } else if let host = c.host { out.machines.append((host.lowercased(), creds)) }
        }
        while i < tokens.count {
            let t = tokens[i]
            let next = i + 1 < tokens.count ? tokens[i + 1] : nil
            switch t {
            case "machine":
                flush(); current = (next, false, nil, nil); i += 2
            case "default":
                flush(); current = (nil, true, nil, nil); i += 1
            case "login":
                current?.user = next; i += 2
            case "password":
                current?.password = next; i += 2
            case "account":
                i += 2
            case "macdef":
                // A macro runs to the next blank line; Coffer has no use for it.
                flush(); current = nil; i += 2
            default:
                i += 1
            }
        }
        flush()
        return out
    }

    func entry(for host: String) -> WebDAVCredentials? {
        machines.first { $0.host == host.lowercased() }?.credentials ?? fallback
    }
}

/// Percent-encoding of URL path segments, and the reverse.
package enum WebDAVPath {
    /// Encodes everything except RFC 3986 unreserved characters.
    package static func encodeSegment(_ s: String) -> String {
        var out = ""
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(b))
            default:
                let digits = Array("0123456789ABCDEF")
                out += "%" + String(digits[Int(b >> 4)]) + String(digits[Int(b & 15)])
            }
        }
        return out
    }

    /// Decodes `%XX` escapes; `nil` for a malformed escape or bytes that are not UTF-8.
    package static func percentDecode(_ s: some StringProtocol) -> String? {
        var bytes: [UInt8] = []
        var it = Array(s.utf8)[...]
        while let b = it.popFirst() {
            if b == UInt8(ascii: "%") {
                guard it.count >= 2, let v = UInt8(String(decoding: it.prefix(2), as: UTF8.self), radix: 16) else { return nil }
                bytes.append(v)
                it = it.dropFirst(2)
            } else {
                bytes.append(b)
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }
}
