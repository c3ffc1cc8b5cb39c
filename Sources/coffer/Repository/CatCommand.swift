import ArgumentParser
import CofferBackup
import Foundation

/// `coffer cat config|snapshot ID|index ID|pack ID|blob ID|tree ID`
struct CatCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cat",
        abstract: "Print a decrypted repository object as JSON (for debugging).",
        discussion: """
            config: the repository's parameters (never its keys). snapshot ID: a snapshot object (latest, \
            an id or a prefix). index ID, pack ID: an index object or a pack's header, listing their \
            blobs. blob ID: a blob's place in the index and its plaintext in base64. tree ID: a directory \
            listing. Index, pack, blob and tree ids are full (64 hex digits): `cat snapshot` shows the \
            root tree, `cat tree` the subtrees and content blobs. Everything is verified as it is read.
            """)

    @OptionGroup var global: GlobalOptions

    @Argument(help: ArgumentHelp("config, snapshot, index, pack, blob or tree.", valueName: "kind"))
    var kind: String

    @Argument(help: ArgumentHelp("The object's id (all but config).", valueName: "id"))
    var id: String?

    func validate() throws {
        guard let k = InspectKind(rawValue: kind) else {
            throw ValidationError("unknown object kind \"\(kind)\": give config, snapshot, index, pack, blob or tree")
        }
        if k == .config, id != nil { throw ValidationError("config takes no id") }
        if k != .config, id == nil { throw ValidationError("\(kind) needs an id") }
    }

    func run() async throws {
        let access = RepositoryAccess(global)
        try await ErrorReport.run(logger: access.logger) {
            let value = try await access.withRepository { repo in
                try await repo.inspect(InspectKind(rawValue: kind)!, id: id)
            }
            try JSONOutput.print(value)
            return .ok
        }
    }
}
