#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// Writing to the terminal: stdout for results, stderr for progress, messages and the log.
enum Terminal {
    /// Whether stderr is a terminal: only then is the progress line drawn (and redrawn with `\r`).
    static var stderrIsTTY: Bool { isatty(STDERR_FILENO) == 1 }
    static var stdoutIsTTY: Bool { isatty(STDOUT_FILENO) == 1 }

    /// Writes to stdout, unbuffered so that output and stderr interleave in order.
    static func out(_ text: String) {
        write(fd: STDOUT_FILENO, text)
    }

    /// A line on stdout.
    static func line(_ text: String = "") {
        out(text + "\n")
    }

    /// Writes to stderr.
    static func err(_ text: String) {
        write(fd: STDERR_FILENO, text)
    }

    private static func write(fd: Int32, _ text: String) {
        var bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeMutableBytes { raw in
                #if canImport(Darwin)
                Darwin.write(fd, raw.baseAddress! + offset, raw.count - offset)
                #else
                Glibc.write(fd, raw.baseAddress! + offset, raw.count - offset)
                #endif
            }
            if n < 0 {
                if errno == EINTR { continue }
                return  // closed pipe: nothing useful left to do
            }
            offset += n
        }
        bytes.removeAll()
    }
}

/// Human-readable quantities.
enum Units {
    /// 1536 → "1.5 KiB".
    static func bytes(_ n: Int64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
        var value = Double(n)
        var unit = 0
        while abs(value) >= 1024, unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return unit == 0 ? "\(n) B" : String(format: "%.1f %@", value, units[unit])
    }

    static func bytes(_ n: Int) -> String { bytes(Int64(n)) }

    /// 75 → "1:15", 3725 → "1:02:05".
    static func duration(_ seconds: Double) -> String {
        guard seconds.isFinite, seconds >= 0 else { return "--:--" }
        let s = Int(seconds.rounded())
        if s >= 3600 { return String(format: "%d:%02d:%02d", s / 3600, (s / 60) % 60, s % 60) }
        return String(format: "%d:%02d", s / 60, s % 60)
    }

    /// Seconds with one decimal.
    static func seconds(_ seconds: Double) -> String {
        String(format: "%.1f s", seconds)
    }

    /// An ISO 8601 UTC timestamp (second precision).
    static func timestamp(_ date: Date) -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime]
        f.timeZone = TimeZone(identifier: "UTC")
        return f.string(from: date)
    }

    /// A local, compact timestamp for tables: "2026-11-29 14:05:09".
    static func localTime(_ date: Date) -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.dateFormat = "yyyy-MM-dd HH:mm:ss"
        return f.string(from: date)
    }
}

/// "1 file", "2 files".
func plural(_ n: Int, _ word: String) -> String { "\(n) \(word)\(n == 1 ? "" : "s")" }
