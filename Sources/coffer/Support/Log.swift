import Logging

/// The CLI's log: internal details (underlying errors, object names, timings) that help a developer
/// but would clutter a user's screen. Written to stderr only with `--verbose`; never holds secrets
/// (keys are never formatted into messages: `BackupKey.description` is redacted anyway).
enum CLILog {
    private static let once: Void = {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = .trace
            return handler
        }
    }()

    /// The logger for this run: debug level with `--verbose`, otherwise silent except for critical.
    static func logger(verbose: Bool) -> Logger {
        _ = once
        var logger = Logger(label: "coffer")
        logger.logLevel = verbose ? .debug : .critical
        return logger
    }
}
