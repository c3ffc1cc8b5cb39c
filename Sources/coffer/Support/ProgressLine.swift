#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CofferBackup
import Foundation
import Synchronization

/// Progress on stderr. On a terminal: the live line, redrawn in place with `\r` at most ten times a
/// second and erased before any other message or the summary. Anywhere else (a log file, a pipe):
/// the same text as a plain line every `ProgressRate.interval` seconds (10 s, or
/// `COFFER_PROGRESS_FPS`), the first one after one interval.
struct ProgressLine {
    let enabled: Bool
    private let live: Bool
    private let interval: Double
    private var lastDraw: ContinuousClock.Instant?
    private var visible = false
    /// Recent (seconds since start, bytes done) samples for a rate that follows changes.
    private var samples: [(t: Double, bytes: Int64)] = []

    init(enabled: Bool, live: Bool = Terminal.stderrIsTTY) {
        self.enabled = enabled
        self.live = live
        interval = live ? 0.1 : ProgressRate.interval
        if !live { lastDraw = ContinuousClock.now }
    }

    /// The terminal's width, 80 when unknown.
    static var width: Int {
        var ws = winsize()
        if ioctl(STDERR_FILENO, UInt(TIOCGWINSZ), &ws) == 0, ws.ws_col > 0 { return Int(ws.ws_col) }
        return 80
    }

    /// Draws `files`, `bytes`, rate and ETA, then the current path, cut to the terminal width.
    /// `unit` names what `filesDone` counts (files, packs, blobs).
    mutating func update(filesDone: Int, filesTotal: Int, bytesDone: Int64, bytesTotal: Int64,
                         elapsed: Double, current: String?, unit: String = "files", force: Bool = false) {
        guard enabled else { return }
        let now = ContinuousClock.now
        samples.append((elapsed, bytesDone))
        samples.removeAll { elapsed - $0.t > 5 }
        if !force, let last = lastDraw, (now - last).seconds < interval { return }
        lastDraw = now
        let rate = Self.rate(samples, elapsed: elapsed, bytesDone: bytesDone)
        let eta: String
        if rate > 0, bytesTotal > bytesDone {
            eta = "ETA " + Units.duration(Double(bytesTotal - bytesDone) / rate)
        } else {
            eta = "ETA --:--"
        }
        let pct = bytesTotal > 0 ? Int(Double(bytesDone) * 100 / Double(bytesTotal)) : 0
        var line = "[\(Units.duration(elapsed))] \(pct)%  \(filesDone)/\(filesTotal) \(unit)  "
            + "\(Units.bytes(bytesDone))/\(Units.bytes(bytesTotal))  \(Units.bytes(Int64(rate)))/s  \(eta)"
        if !live {
            // A plain line for logs: the whole path, no width limit, no control characters.
            if let current, !current.isEmpty { line += "  " + current }
            Terminal.err(line + "\n")
            return
        }
        let width = Self.width - 1
        if let current, !current.isEmpty {
            // Keep the end of the path (the file name) when it does not fit.
            let room = width - line.count - 2
            if room >= current.count {
                line += "  " + current
            } else if room > 8 {
                line += "  …" + current.suffix(room - 1)
            }
        }
        if line.count > width { line = String(line.prefix(width)) }
        Terminal.err("\r\u{1B}[K" + line)
        visible = true
    }

    /// Bytes per second over the last few seconds, or overall when too little time has passed.
    static func rate(_ samples: [(t: Double, bytes: Int64)], elapsed: Double, bytesDone: Int64) -> Double {
        if let first = samples.first, let last = samples.last, last.t - first.t >= 1 {
            return Double(last.bytes - first.bytes) / (last.t - first.t)
        }
        return elapsed > 0 ? Double(bytesDone) / elapsed : 0
    }

    /// Erases the line so that a message or the summary starts on a clean line.
    mutating func clear() {
        guard enabled, live, visible else { return }
        Terminal.err("\r\u{1B}[K")
        visible = false
    }
}

extension Duration {
    var seconds: Double {
        let c = components
        return Double(c.seconds) + Double(c.attoseconds) / 1e18
    }
}

/// Progress of a command whose library call reports from its own task (copy, check --read-data,
/// prune): the live line or plain lines (text) or `--json` status lines, behind one lock.
final class ProgressReporter: Sendable {
    private struct State {
        var line: ProgressLine
        var status: StatusEmitter
    }
    private let state: Mutex<State>
    let action: String

    /// `text`: the line on stderr; `json`: status lines on stdout. Both follow ``ProgressRate``.
    init(action: String, text: Bool, json: Bool) {
        self.action = action
        state = Mutex(State(line: ProgressLine(enabled: text), status: StatusEmitter(enabled: json, action: action)))
    }

    func update(done: Int, total: Int, unit: String, bytesDone: Int64, bytesTotal: Int64, elapsed: Duration, step: String?) {
        let action = self.action
        state.withLock {
            $0.line.update(filesDone: done, filesTotal: total, bytesDone: bytesDone, bytesTotal: bytesTotal,
                           elapsed: elapsed.seconds, current: step, unit: unit)
            $0.status.offer(StatusJSON(action: action, secondsElapsed: elapsed.seconds,
                                       percentDone: bytesTotal > 0 ? min(1, Double(bytesDone) / Double(bytesTotal)) : nil,
                                       bytesDone: bytesDone, bytesTotal: bytesTotal, message: step,
                                       itemsDone: done, itemsTotal: total, items: unit))
        }
    }

    /// The callback for a library job reporting ``WorkProgress`` (check, prune).
    var workProgress: @Sendable (WorkProgress) -> Void {
        { [self] p in
            update(done: p.done, total: p.total, unit: p.unit, bytesDone: p.bytesDone, bytesTotal: p.bytesTotal, elapsed: p.elapsed, step: p.step)
        }
    }

    /// Erases the live line (before a message or the summary).
    func clear() { state.withLock { $0.line.clear() } }
}
