/// Global options before the subcommand (`coffer -r REPO --json snapshots`), moved after it before
/// parsing, since ArgumentParser only reads a subcommand's options after the subcommand's name.
///
/// Only a known set is moved, and only from the front: scanning stops at the first word that is not
/// one of them (the subcommand, `--help`, `--version`, completion requests), so everything else is
/// parsed exactly as typed. The moved options go after the rest, before a `--` if there is one.
enum GlobalOptionOrder {
    /// Options that take a value (as the next word, or after `=` for long names).
    static let withValue: Set<String> = ["-r", "--repo", "--key-file", "--password-file", "--password-command"]
    /// Options that stand alone.
    static let flags: Set<String> = ["-v", "--verbose", "--json", "-q", "--quiet", "--no-progress"]

    /// `arguments` without the program name.
    static func reorder(_ arguments: [String]) -> [String] {
        var moved: [String] = []
        var i = 0
        while i < arguments.count {
            let a = arguments[i]
            if flags.contains(a) {
                moved.append(a)
                i += 1
            } else if withValue.contains(a), i + 1 < arguments.count {
                moved += [a, arguments[i + 1]]
                i += 2
            } else if a.hasPrefix("--"), let eq = a.firstIndex(of: "="), withValue.contains(String(a[..<eq])) {
                moved.append(a)
                i += 1
            } else {
                break
            }
        }
        guard !moved.isEmpty, i < arguments.count else { return arguments }
        var rest = Array(arguments[i...])
        if let dashes = rest.firstIndex(of: "--") {
            rest.insert(contentsOf: moved, at: dashes)
        } else {
            rest += moved
        }
        return rest
    }
}
