import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A real TCP proxy on loopback between the S3 client and moto that misbehaves on purpose:
/// it resets connections before answering, cuts responses off halfway with a reset, stalls
/// without answering, and answers 500 InternalError or 503 SlowDown, each for a share of requests
/// (the first five requests get one fault of each kind, so every kind is exercised in every run).
/// It is a small Python script (Python is already needed for moto), written out and run per test.
final class FaultProxy: @unchecked Sendable {
    let process: Process
    let port: Int
    let logPath: String
    var endpoint: String { "http://127.0.0.1:\(port)" }

    static let script = #"""
    import random, re, socket, struct, sys, threading, time

    listen_port, upstream_port, seed = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    rate, stall_seconds, forced = float(sys.argv[4]), float(sys.argv[5]), sys.argv[6] == "1"
    # Optional rewrites of what moto answers: the Last-Modified header, and every <LastModified>
    # of a listing ("" leaves them as moto sent them).
    header_date = sys.argv[7].encode() if len(sys.argv) > 7 else b""
    listing_date = sys.argv[8].encode() if len(sys.argv) > 8 else b""
    rng = random.Random(seed)
    lock = threading.Lock()
    counter = [0]
    KINDS = ["reset", "midreset", "stall", "500", "503"]

    def log(line):
        with lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def choose():
        with lock:
            n = counter[0]
            counter[0] += 1
            if forced and n < len(KINDS):
                return KINDS[n]
            r = rng.random()
            pick = rng.random()
        if r >= rate:
            return "pass"
        weights = {"reset": 1.0, "midreset": 1.0, "stall": 0.3, "500": 1.0, "503": 1.0}
        total = sum(weights.values())
        acc = 0.0
        for kind in KINDS:
            acc += weights[kind] / total
            if pick < acc:
                return kind
        return "503"

    def reset(sock):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    def read_request(sock, buf):
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                return None, b""
            buf += chunk
        head, rest = buf.split(b"\r\n\r\n", 1)
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                return None, b""
            rest += chunk
        return head + b"\r\n\r\n" + rest[:length], rest[length:]

    def forward(request):
        head, body = request.split(b"\r\n\r\n", 1)
        lines = [l for l in head.split(b"\r\n") if not l.lower().startswith(b"connection:")]
        lines.append(b"Connection: close")
        up = socket.create_connection(("127.0.0.1", upstream_port))
        up.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        chunks = []
        while True:
            c = up.recv(65536)
            if not c:
                break
            chunks.append(c)
        up.close()
        return b"".join(chunks)

    def rewrite(response):
        if not header_date and not listing_date:
            return response
        head, sep, body = response.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        if header_date:
            lines = [b"Last-Modified: " + header_date if l.lower().startswith(b"last-modified:") else l for l in lines]
        if listing_date and b"<LastModified>" in body:
            body = re.sub(rb"<LastModified>[^<]*</LastModified>", b"<LastModified>" + listing_date + b"</LastModified>", body)
            lines = [b"Content-Length: %d" % len(body) if l.lower().startswith(b"content-length:") else l for l in lines]
        log("rewrote")
        return b"\r\n".join(lines) + sep + body

    def error_response(status, code):
        body = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>%s</Code><Message>injected</Message></Error>" % code).encode()
        return ("HTTP/1.1 %s\r\nContent-Type: application/xml\r\nContent-Length: %d\r\n\r\n" % (status, len(body))).encode() + body

    def serve(client):
        buf = b""
        try:
            while True:
                request, buf = read_request(client, buf)
                if request is None:
                    client.close()
                    return
                kind = choose()
                method = request.split(b" ", 1)[0].decode()
                log("%s %s" % (kind, method))
                if kind == "reset":
                    reset(client)
                    return
                if kind == "stall":
                    time.sleep(stall_seconds)
                    client.close()
                    return
                if kind == "500":
                    client.sendall(error_response("500 Internal Server Error", "InternalError"))
                    continue
                if kind == "503":
                    client.sendall(error_response("503 Slow Down", "SlowDown"))
                    continue
                response = rewrite(forward(request))
                if kind == "midreset":
                    client.sendall(response[: max(1, len(response) // 2)])
                    reset(client)
                    return
                head = response.split(b"\r\n\r\n", 1)[0].lower()
                client.sendall(response)
                if b"content-length:" not in head and b"transfer-encoding:" not in head:
                    client.close()
                    return
        except OSError:
            try:
                client.close()
            except OSError:
                pass

    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", listen_port))
    server.listen(128)
    log("listening")
    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()
    """#

    /// Starts the proxy in front of `upstreamPort`.
    /// - Parameters:
    ///   - rate: share of requests (after the first five) that get a fault.
    ///   - stallSeconds: how long a stalled request hangs before the proxy drops it (longer than
    ///     the client's read timeout, so the client gives up first).
    ///   - forceEachKind: give the first five requests one fault of each kind.
    ///   - lastModified: when set, replaces the `Last-Modified` header of every answer.
    ///   - listingLastModified: when set, replaces every `<LastModified>` of a listing.
    static func start(upstreamPort: Int, rate: Double = 0.15, stallSeconds: Double = 4, seed: Int = 7,
                      forceEachKind: Bool = true, lastModified: String = "",
                      listingLastModified: String = "") async throws -> FaultProxy {
        let dir = NSTemporaryDirectory()
        let scriptPath = dir + "coffer-faultproxy-\(UUID().uuidString).py"
        try script.write(toFile: scriptPath, atomically: true, encoding: .utf8)
        let port = try MotoServer.freePort()
        let logPath = dir + "coffer-faultproxy-\(port).log"
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", scriptPath, "\(port)", "\(upstreamPort)", "\(seed)", "\(rate)", "\(stallSeconds)", forceEachKind ? "1" : "0", lastModified, listingLastModified]
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        p.standardOutput = log
        p.standardError = log
        try p.run()
        try await MotoServer.waitForPort(port, process: p, seconds: 15)
        try? FileManager.default.removeItem(atPath: scriptPath)
        return FaultProxy(process: p, port: port, logPath: logPath)
    }

    private init(process: Process, port: Int, logPath: String) {
        self.process = process
        self.port = port
        self.logPath = logPath
    }

    /// How many requests got each kind of treatment (`pass`, `reset`, `midreset`, `stall`, `500`, `503`).
    func counts() -> [String: Int] {
        let text = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
        var out: [String: Int] = [:]
        for line in text.split(separator: "\n") {
            let kind = line.split(separator: " ").first.map(String.init) ?? ""
            if kind != "listening" { out[kind, default: 0] += 1 }
        }
        return out
    }

    func stop() {
        MotoServer.stopProcess(process)
        try? FileManager.default.removeItem(atPath: logPath)
    }
}
