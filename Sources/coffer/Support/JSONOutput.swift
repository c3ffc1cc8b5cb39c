import Foundation

/// `--json` output. Every command that takes `--json` writes JSON Lines on stdout: each line one
/// complete JSON value, keys in snake_case and sorted, so that scripts and diffs are stable. Short
/// commands print one line. Long commands (backup, restore, check, prune, key rotate) print
/// `{"message_type":"status",...}` lines while they run and one `{"message_type":"summary",...}`
/// line at the end. A failure adds one `{"message_type":"error",...}` line on stderr. The schema of
/// each line is in docs/schemas/ (docs/CLI.md, "JSON output").
enum JSONOutput {
    /// Whether this run asked for JSON: `--json` among the arguments before a `--`. Read from the
    /// command line so that the error path (which runs outside any one command's options) knows it.
    static let requested: Bool = {
        let args = CommandLine.arguments.dropFirst()
        let end = args.firstIndex(of: "--") ?? args.endIndex
        return args[..<end].contains("--json")
    }()

    /// The one encoder of the CLI: snake_case keys (`snapshotID` becomes `snapshot_id`), sorted,
    /// on one line, dates as ISO 8601.
    static func encoder() -> JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        e.keyEncodingStrategy = .convertToSnakeCase
        e.dateEncodingStrategy = .iso8601
        return e
    }

    /// One value as one line of JSON (no newline).
    static func line<T: Encodable>(_ value: T) throws -> String {
        String(decoding: try encoder().encode(value), as: UTF8.self)
    }

    /// One line on stdout.
    static func print<T: Encodable>(_ value: T) throws {
        Terminal.out(try line(value) + "\n")
    }

    /// The error line on stderr: `{"code":N,"hint":...,"message":...,"message_type":"error"}`.
    static func printError(code: CofferExitCode, message: String, hint: String?) {
        let e = ErrorJSON(code: Int(code.rawValue), message: message, hint: hint)
        if let text = try? line(e) { Terminal.err(text + "\n") }
    }
}

/// The error line of `--json` (docs/schemas/error.json).
struct ErrorJSON: Encodable {
    var messageType = "error"
    /// The exit code the command ends with.
    var code: Int
    var message: String
    var hint: String?
}

/// A status line of a long command with `--json` (docs/schemas/status.json).
struct StatusJSON: Encodable {
    var messageType = "status"
    /// Which command prints it: backup, restore, check, prune, key_rotate.
    var action: String
    var secondsElapsed: Double
    /// 0...1 by bytes when the total is known.
    var percentDone: Double?
    var filesDone: Int?
    var filesTotal: Int?
    var bytesDone: Int64?
    var bytesTotal: Int64?
    var currentPath: String?
    /// A step of a command without counters (key rotate), or the step under way (prune).
    var message: String?
    /// What copy, check --read-data and prune count instead of files: `items` names it (blobs,
    /// packs, objects).
    var itemsDone: Int?
    var itemsTotal: Int?
    var items: String?
}

/// How often progress is reported: the live line on a terminal is redrawn up to ten times a second;
/// anywhere else (a log file, a pipe, `--json` status lines) every 10 s, or at
/// `COFFER_PROGRESS_FPS` frames per second when set (0.5 = every 2 s).
enum ProgressRate {
    static let defaultInterval = 10.0

    /// The FPS from the environment, nil when unset or not a positive number.
    static var fps: Double? {
        guard let s = ProcessInfo.processInfo.environment["COFFER_PROGRESS_FPS"], let v = Double(s), v > 0, v.isFinite else { return nil }
        return v
    }

    /// Seconds between plain progress lines or JSON status lines.
    static var interval: Double { fps.map { 1 / $0 } ?? defaultInterval }
}

/// Emits `--json` status lines at the progress interval (the first one after one interval).
struct StatusEmitter {
    let enabled: Bool
    let action: String
    private let interval: Double
    private var last: ContinuousClock.Instant

    init(enabled: Bool, action: String) {
        self.enabled = enabled
        self.action = action
        interval = ProgressRate.interval
        last = ContinuousClock.now
    }

    /// Prints `status` when an interval has passed since the last line.
    mutating func offer(_ status: @autoclosure () -> StatusJSON) {
        guard enabled else { return }
        let now = ContinuousClock.now
        guard (now - last).seconds >= interval else { return }
        last = now
        try? JSONOutput.print(status())
    }
}
