#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CofferS3
import Crypto
import CofferCore

/// One challenge from a `WWW-Authenticate` header: the scheme and its parameters.
package struct AuthChallenge: Sendable, Equatable {
    package var scheme: String
    package var parameters: [String: String]

    /// Parses a `WWW-Authenticate` value, which may hold several challenges
    /// (`Digest realm="x", nonce="y", Basic realm="x"`). Unreadable parts are skipped, never trapped on.
    package static func parse(_ header: String) -> [AuthChallenge] {
        var out: [AuthChallenge] = []
        let s = Array(header.utf8)
        var i = 0
        func skipSpaces() { while i < s.count, s[i] == UInt8(ascii: " ") || s[i] == UInt8(ascii: "\t") || s[i] == UInt8(ascii: ",") { i += 1 } }
        func token() -> String {
            let start = i
            while i < s.count, s[i] != UInt8(ascii: " "), s[i] != UInt8(ascii: "\t"), s[i] != UInt8(ascii: ","), s[i] != UInt8(ascii: "=") { i += 1 }
            return String(decoding: s[start..<i], as: UTF8.self)
        }
        while true {
            skipSpaces()
            guard i < s.count else { break }
            let scheme = token()
            guard !scheme.isEmpty else { i += 1; continue }
            var challenge = AuthChallenge(scheme: scheme.lowercased(), parameters: [:])
            // Parameters: name=value or name="quoted", separated by commas, until the next scheme.
            while true {
                skipSpaces()
                let save = i
                let name = token()
                guard !name.isEmpty, i < s.count, s[i] == UInt8(ascii: "=") else { i = save; break }
                i += 1
                var value: [UInt8] = []
                if i < s.count, s[i] == UInt8(ascii: "\"") {
                    i += 1
                    while i < s.count, s[i] != UInt8(ascii: "\"") {
                        if s[i] == UInt8(ascii: "\\"), i + 1 < s.count { i += 1 }
                        value.append(s[i]); i += 1
                    }
                    if i < s.count { i += 1 }  // the closing quote, when there is one
                } else {
                    while i < s.count, s[i] != UInt8(ascii: ","), s[i] != UInt8(ascii: " ") { value.append(s[i]); i += 1 }
                }
                challenge.parameters[name.lowercased()] = String(decoding: value, as: UTF8.self)
            }
            out.append(challenge)
        }
        return out
    }
}

/// HTTP Digest access authentication (RFC 7616): MD5, SHA-256 and their `-sess` variants, `qop=auth`.
package struct DigestAuth: Sendable {
    package enum Algorithm: String, Sendable {
        case md5 = "MD5", md5sess = "MD5-sess", sha256 = "SHA-256", sha256sess = "SHA-256-sess"

        func hash(_ s: String) -> String {
            switch self {
            case .md5, .md5sess: return Insecure.MD5.hash(data: Array(s.utf8)).hexString
            case .sha256, .sha256sess: return SHA256.hash(data: Array(s.utf8)).hexString
            }
        }

        var isSession: Bool { self == .md5sess || self == .sha256sess }
        /// SHA-256 first: RFC 7616 asks clients to prefer it.
        var preference: Int { self == .sha256 || self == .sha256sess ? 2 : 1 }
    }

    package var realm: String
    package var nonce: String
    package var opaque: String?
    package var algorithm: Algorithm
    /// `true` when the server offered `qop=auth` (the other form, without qop, is RFC 2069's).
    package var qopAuth: Bool

    /// Reads a Digest challenge; `nil` for one this client cannot answer (unknown algorithm,
    /// `auth-int` only, no nonce).
    package init?(_ challenge: AuthChallenge) {
        guard challenge.scheme == "digest", let realm = challenge.parameters["realm"],
              let nonce = challenge.parameters["nonce"], !nonce.isEmpty else { return nil }
        let algorithmName = challenge.parameters["algorithm"] ?? "MD5"
        guard let algorithm = [Algorithm.md5, .md5sess, .sha256, .sha256sess]
            .first(where: { $0.rawValue.caseInsensitiveCompare(algorithmName) == .orderedSame }) else { return nil }
        if let qop = challenge.parameters["qop"] {
            let options = qop.split(separator: ",").map { $0.filter { $0 != " " && $0 != "\t" }.lowercased() }
            guard options.contains("auth") else { return nil }
            qopAuth = true
        } else {
            qopAuth = false
        }
        self.realm = realm
        self.nonce = nonce
        self.opaque = challenge.parameters["opaque"]
        self.algorithm = algorithm
    }

    /// The `Authorization` value for one request. `nc` counts requests made with this nonce.
    package func authorization(method: String, uri: String, credentials: WebDAVCredentials, nc: Int,
                               cnonce: String) -> String {
        var ha1 = algorithm.hash("\(credentials.user):\(realm):\(credentials.password)")
        if algorithm.isSession { ha1 = algorithm.hash("\(ha1):\(nonce):\(cnonce)") }
        let ha2 = algorithm.hash("\(method):\(uri)")
        let ncText = String(String(nc, radix: 16).suffix(8)).leftPadded(to: 8)
        let response = qopAuth
            ? algorithm.hash("\(ha1):\(nonce):\(ncText):\(cnonce):auth:\(ha2)")
            : algorithm.hash("\(ha1):\(nonce):\(ha2)")
        func q(_ v: String) -> String { "\"" + v.replacing("\\", with: "\\\\").replacing("\"", with: "\\\"") + "\"" }
        var parts = ["username=\(q(credentials.user))", "realm=\(q(realm))", "nonce=\(q(nonce))", "uri=\(q(uri))",
                     "algorithm=\(algorithm.rawValue)", "response=\(q(response))"]
        if qopAuth { parts += ["qop=auth", "nc=\(ncText)", "cnonce=\(q(cnonce))"] }
        if let opaque { parts.append("opaque=\(q(opaque))") }
        return "Digest " + parts.joined(separator: ", ")
    }

    /// The strongest Digest challenge this client can answer, if any.
    package static func best(of challenges: [AuthChallenge]) -> DigestAuth? {
        challenges.compactMap(DigestAuth.init).max { $0.algorithm.preference < $1.algorithm.preference }
    }
}

extension String {
    func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
