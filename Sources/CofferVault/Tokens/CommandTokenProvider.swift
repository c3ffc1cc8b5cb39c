#if canImport(FoundationEssentials)
import FoundationEssentials
#endif
import Foundation

/// Gets realm tokens from an external command (how a terminal user talks to a real tenant):
/// runs `command user realmIDHex scope` and reads the token from its standard output.
public struct CommandTokenProvider: TokenProvider {
    public let executable: String
    public let arguments: [String]

    /// - Parameter commandLine: an executable path followed by fixed arguments, split on spaces.
    public init(commandLine: String) {
        let parts = commandLine.split(separator: " ").map(String.init)
        executable = parts.first ?? ""
        arguments = Array(parts.dropFirst())
    }

    public func token(user: String, realmID: RealmID, scope: VaultScope) async throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments + [user, realmID.hex, scope.rawValue]
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw VaultConfigurationError("the token command \(executable) failed with status \(process.terminationStatus)")
        }
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
