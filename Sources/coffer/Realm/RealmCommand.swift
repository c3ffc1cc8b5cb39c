import ArgumentParser
import CofferRealm
import CofferVault
import Foundation
import Logging

/// `coffer realm ...`: run a Backup Key Vault realm, or a local development cluster of them.
struct RealmCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "realm",
        abstract: "Run a Backup Key Vault realm (operators), or a local development cluster.",
        subcommands: [RealmInit.self, RealmServe.self, RealmCluster_.self, RealmMigrate.self, RealmAddTenant.self, RealmRotateKey.self, RealmBench.self, RealmBenchRecovery.self])
}

/// Errors of the realm commands: a message for the person, exit code 1.
struct RealmCommandError: Error, CustomStringConvertible {
    var description: String
}

func realmLogger(_ label: String) -> Logger {
    var l = Logger(label: label)
    l.logLevel = ProcessInfo.processInfo.environment["COFFER_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .info
    return l
}

func parseListen(_ s: String, option: String = "--listen") throws -> (String, Int) {
    do {
        return try RealmServer.parseListen(s, option: option)
    } catch let e as RealmFileError {
        throw ValidationError(e.message)
    }
}

/// Writes a line to standard output unbuffered (a parent process waits for these lines).
func say(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

func prettyJSON(_ value: some Encodable) -> String {
    let enc = JSONEncoder()
    enc.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    return String(decoding: (try? enc.encode(value)) ?? Data(), as: UTF8.self)
}

/// The realm descriptor as one line of JSON, in its own (vault.json) key names.
func compactJSON(_ value: some Encodable) -> String {
    let enc = JSONEncoder()
    enc.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return String(decoding: (try? enc.encode(value)) ?? Data(), as: UTF8.self)
}

/// `coffer realm init --json` (docs/schemas/realm-init.json).
struct RealmInitJSON: Encodable {
    var realmId: String
    var dir: String
    var keyFile: String
    var configFile: String
    var x: Int
    var guessLimit: Int
    /// The descriptor clients pin, as JSON text in vault.json's own key names.
    var descriptor: String
}

/// `coffer realm add-tenant --json`.
struct RealmAddTenantJSON: Encodable {
    var tenant: String
    var kid: String
    var alg: String
    var configFile: String
}

/// `coffer realm rotate-key --json`.
struct RealmRotateKeyJSON: Encodable {
    var added: UInt32?
    var retired: UInt32?
    var liveKeys: [UInt32]
    var descriptor: String
}

struct RealmInit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Create a realm: its id, HPKE key pair and storage key (0600 key file) and its configuration.",
        discussion: "Prints the realm descriptor that clients pin. Back up realm.key offline: without it the database is unreadable.")

    @Option(help: "The realm's folder (created).") var dir: String
    @Option(help: "This realm's Shamir x-coordinate, 1...255 (distinct per realm of a vault).") var x: UInt8 = 1
    @Option(help: "Maximum wrong guesses per record (a registration's policy may ask for fewer).") var guessLimit: Int = 10
    @Option(help: "The URL clients will use (printed in the descriptor).") var url: String?
    @Option(help: ArgumentHelp("Where the realm keeps its state: sqlite (default, realm.sqlite in --dir), sqlite:PATH, or postgres://USER@HOST:PORT/DATABASE[?schema=NAME].",
                               discussion: "Written into realm.json. Give a PostgreSQL password in PGPASSWORD, not in the URL."))
    var store: String?
    @Flag(name: .long, help: "Print the result as JSON on stdout.") var json = false

    func run() async throws {
        // Errors as every command prints them: `coffer: message` (or the --json error line).
        try await runMapped {
            let dir = RealmDirectory(URL(fileURLWithPath: self.dir))
            if let store {
                let location = try RealmStoreLocation.parse(store, directory: dir)
                if case .postgres(let p) = location, p.password != nil {
                    throw RealmCommandError(description: "--store: give the PostgreSQL password in PGPASSWORD, not in the URL (realm.json is not a secret file)")
                }
            }
            let (keys, _) = try dir.initialize(x: x, guessLimit: guessLimit, url: url, store: store)
            if json {
                try JSONOutput.print(RealmInitJSON(realmId: keys.realmIDHex, dir: dir.url.path, keyFile: dir.keyFile.path,
                                                   configFile: dir.configFile.path, x: Int(x), guessLimit: guessLimit,
                                                   descriptor: compactJSON(keys.descriptor(url: url ?? "http://HOST:PORT"))))
                return
            }
            print("Created realm \(keys.realmIDHex) in \(dir.url.path):")
            print("  \(dir.keyFile.path)     secrets (mode 0600): back it up offline")
            print("  \(dir.configFile.path)    configuration: x = \(x), guess limit \(guessLimit), no tenants yet")
            if let store { print("  store: \(try RealmStoreLocation.parse(store, directory: dir)) (created when the realm first starts)") }
            print("Add a tenant with `coffer realm add-tenant --dir \(self.dir) --id ISSUER --key PUBLIC.pem --alg ES256`.")
            print("Descriptor for clients to pin (Shamir x = \(x)):")
            print(prettyJSON(keys.descriptor(url: url ?? "http://HOST:PORT")))
        }
    }
}

struct RealmAddTenant: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add-tenant",
        abstract: "Pin a tenant's token-signing public key in a realm's configuration.")

    @Option(help: "The realm's folder.") var dir: String
    @Option(help: "The tenant id (the tokens' iss).") var id: String
    @Option(help: "PEM file with the tenant's public key.") var key: String
    @Option(help: "ES256 or EdDSA.") var alg: String = "ES256"
    @Option(help: "Key id (the tokens' kid header).") var kid: String = "1"
    @Flag(name: .long, help: "Print the result as JSON on stdout.") var json = false

    func run() async throws {
        // Errors as every command prints them: `coffer: message` (or the --json error line).
        try await runMapped {
            let dir = RealmDirectory(URL(fileURLWithPath: self.dir))
            var config = try RealmConfig.load(from: dir.configFile)
            guard let pem = try? String(contentsOfFile: key, encoding: .utf8) else { throw RealmCommandError(description: "cannot read \(key)") }
            let k = RealmConfig.TenantKey(kid: kid, alg: alg, publicKeyPEM: pem)
            if let i = config.tenants.firstIndex(where: { $0.id == id }) {
                config.tenants[i].keys.removeAll { $0.kid == kid }
                config.tenants[i].keys.append(k)
            } else {
                config.tenants.append(.init(id: id, keys: [k]))
            }
            try config.validate(path: dir.configFile.path)
            // Parse the key now rather than at the next start.
            let keys = try RealmKeys.load(from: dir.keyFile)
            do {
                _ = try await TokenVerifier(config: config, realmID: try RealmID(bytes: Array(keys.realmID)))
            } catch {
                throw RealmCommandError(description: "\(key) is not a valid \(alg) public key (PEM)")
            }
            try config.save(to: dir.configFile)
            if json {
                try JSONOutput.print(RealmAddTenantJSON(tenant: id, kid: kid, alg: alg, configFile: dir.configFile.path))
                return
            }
            print("Pinned \(alg) key '\(kid)' for tenant '\(id)' in \(dir.configFile.path); restart the realm to apply.")
        }
    }
}

struct RealmRotateKey: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rotate-key",
        abstract: "Add a new HPKE key (both stay live), or retire an old one once clients pin the new.")

    @Option(help: "The realm's folder.") var dir: String
    @Option(help: "Retire this key id instead of adding one.") var retire: UInt32?
    @Flag(name: .long, help: "Print the result as JSON on stdout.") var json = false

    func run() async throws {
        // Errors as every command prints them: `coffer: message` (or the --json error line).
        try await runMapped {
            let dir = RealmDirectory(URL(fileURLWithPath: self.dir))
            var keys = try RealmKeys.load(from: dir.keyFile)
            var added: UInt32?
            if let retire {
                try keys.retire(keyID: retire)
                if !json { print("Retired HPKE key \(retire).") }
            } else {
                let id = try keys.rotate()
                added = UInt32(id)
                if !json { print("Added HPKE key \(id); keys \(keys.hpkeKeys.map(\.id)) are live.") }
            }
            try keys.save(to: dir.keyFile)
            let config = try RealmConfig.load(from: dir.configFile)
            if json {
                try JSONOutput.print(RealmRotateKeyJSON(added: added, retired: retire, liveKeys: keys.hpkeKeys.map { UInt32($0.id) },
                                                        descriptor: compactJSON(keys.descriptor(url: config.url ?? "http://HOST:PORT"))))
                return
            }
            print("Restart the realm, then have clients pin the new descriptor:")
            print(prettyJSON(keys.descriptor(url: config.url ?? "http://HOST:PORT")))
        }
    }
}

struct RealmServe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve a realm over HTTP until SIGINT/SIGTERM (graceful shutdown).")

    @Option(help: "The realm's folder (from `coffer realm init`).") var dir: String
    @Option(help: "HOST:PORT to listen on (the protocol endpoints and /v1/descriptor only).") var listen: String = "127.0.0.1:7301"
    @Option(help: ArgumentHelp("HOST:PORT of the admin listener (/health, /metrics); overrides adminListen in realm.json.",
                               discussion: "Bind it to an address only your monitoring reaches. Without either, no admin listener runs."))
    var adminListen: String?
    @Option(help: ArgumentHelp("The store, overriding store in realm.json: sqlite, sqlite:PATH or postgres://USER@HOST:PORT/DATABASE[?schema=NAME].",
                               discussion: "Several `serve` processes of one realm may share one PostgreSQL store (docs/REALM.md)."))
    var store: String?

    func run() async throws {
        let (host, port) = try parseListen(listen)
        let logger = realmLogger("coffer.realm")
        let directory = RealmDirectory(URL(fileURLWithPath: dir))
        let service: RealmService
        do {
            let location = try store.map { try RealmStoreLocation.parse($0, directory: directory) }
            service = try await RealmService(directory: directory, store: location, logger: logger)
        } catch let e as RealmStoreUnavailable {
            throw RealmCommandError(description: e.description)
        } catch let e as RealmFileError {
            throw RealmCommandError(description: e.message)
        }
        say("realm \(service.keys.realmIDHex) store: \(service.store.storeDescription)")
        var admin: (String, Int)?
        if let a = adminListen ?? service.config.adminListen {
            admin = try parseListen(a, option: adminListen != nil ? "--admin-listen" : "adminListen")
        } else {
            say("no admin listener (/health, /metrics): set adminListen in realm.json or pass --admin-listen HOST:PORT")
        }
        try await RealmServer.serve(service: service, host: host, port: port, admin: admin, logger: logger,
                                    onListening: { bound in say("realm \(service.keys.realmIDHex) listening on http://\(host):\(bound)") },
                                    onAdminListening: { h, bound in say("realm \(service.keys.realmIDHex) admin (/health, /metrics) on http://\(h):\(bound)") })
    }
}

struct RealmCluster_: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster",
        abstract: "Run a local development vault: N realms on loopback, a development tenant, D/vault.json.")

    @Option(help: "Folder for the realms, the tenant key and vault.json (created if absent).") var dir: String
    @Option(help: "Number of realms.") var count: Int = 5
    @Option(help: "Realms needed to recover (default: a majority).") var threshold: Int?
    @Option(help: "First port (realm i listens on base-port + i - 1); 0 picks free ports.") var basePort: Int = 7301
    @Option(help: "First admin port (/health, /metrics of realm i on admin-base-port + i - 1, loopback); 0 picks free ports. Default: no admin listeners.")
    var adminBasePort: Int?
    @Option(help: ArgumentHelp("Put every realm in this PostgreSQL database, one schema each (realm_1 ...): postgres://USER@HOST:PORT/DATABASE.",
                               discussion: "Default: each realm's SQLite file. The password, if any, in PGPASSWORD."))
    var store: String?

    func validate() throws {
        if let adminBasePort, !(0...65535).contains(adminBasePort) { throw ValidationError("--admin-base-port must be 0...65535") }
    }

    func run() async throws {
        let logger = realmLogger("coffer.realm")
        var postgres: PostgresStoreURL?
        if let store {
            do { postgres = try PostgresStoreURL(parsing: store) } catch let e as RealmFileError { throw ValidationError(e.message) }
        }
        let layout = RealmClusterLayout(directory: URL(fileURLWithPath: dir), count: count, threshold: threshold, postgres: postgres)
        let cluster = try await CofferRealm.RealmCluster.start(layout: layout, basePort: basePort == 0 ? nil : basePort,
                                                               adminBasePort: adminBasePort, logger: logger)
        for line in cluster.actions { say(line) }
        for r in cluster.realms {
            let admin = r.adminURL.map { "  admin \($0)" } ?? ""
            say("realm \(r.number): \(r.url)  id \(r.service?.keys.realmIDHex ?? "?")  x = \(r.number)\(admin)  (\(r.directory.url.path))")
        }
        say("wrote \(layout.vaultConfigURL.path) (\(layout.count) realms, threshold \(layout.threshold), tenant '\(VaultConfiguration.developmentTenantName)')")
        say("Use it with: export COFFER_VAULT=\(layout.vaultConfigURL.path)")
        say("Serving until interrupted (Ctrl-C).")
        try await cluster.runUntilSignalled(logger: logger)
        say("stopped")
    }
}

struct RealmBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Benchmark: guesses/s one realm sustains with durable counters vs raw VOPRF evaluation.",
        shouldDisplay: false)

    @Option(help: "Scratch folder for the benchmark realm (must not exist).") var dir: String
    @Option(help: "Guesses in the timed run.") var guesses: Int = 3000
    @Option(help: "Requests in flight.") var concurrency: Int = 64
    @Option(help: "Seconds per raw VOPRF measurement.") var seconds: Double = 3
    @Option(help: "The benchmark realm's store (sqlite, or postgres://... with a schema of its own).") var store: String?
    @Option(help: "Realm instances sharing the store (each with its own connection pool).") var instances: Int = 1
    @Option(help: "Guesses per user in each timed run (consecutive requests go to different users).") var perUser: Int = 10
    @Option(help: "How requests reach the realm: in-process, http (a loopback server and client), or both (one after the other).")
    var transport: String = "in-process"

    func run() async throws {
        let transports: [RealmBenchmark.Transport]
        switch transport {
        case "in-process": transports = [.inProcess]
        case "http": transports = [.http]
        case "both": transports = [.inProcess, .http]
        default: throw ValidationError("--transport must be in-process, http or both")
        }
        let report = try await RealmBenchmark.run(directory: URL(fileURLWithPath: dir), guesses: guesses, perUser: perUser,
                                                  concurrency: concurrency, seconds: seconds, store: store, instances: instances,
                                                  transports: transports) { print($0) }
        print(report)
    }
}

struct RealmMigrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate",
        abstract: "Copy a realm's store into another (SQLite to PostgreSQL or back), then check it record by record.",
        discussion: """
            Stop every `coffer realm serve` of the realm first (a request served during the copy would be lost). \
            The target must hold no records. Every row is copied as stored (sealed values stay sealed), then both \
            stores are read back and compared row by row, and every record is opened with the realm's key. \
            Afterwards set `store` in realm.json (or pass --store to serve) to the target.
            """)

    @Option(help: "The realm's folder (its realm.key opens the records for the check).") var dir: String
    @Option(help: "The store to copy from: sqlite, sqlite:PATH or postgres://...") var from: String
    @Option(help: "The store to copy into (empty): sqlite:PATH or postgres://...") var to: String
    @Flag(name: .long, help: "Write the target into realm.json's store when the check passed.") var updateConfig = false

    func run() async throws {
        try await runMapped {
            let directory = RealmDirectory(URL(fileURLWithPath: self.dir))
            let (keys, config) = try directory.load()
            let source = try RealmStoreLocation.parse(from, directory: directory)
            let target = try RealmStoreLocation.parse(to, directory: directory)
            guard source != target else { throw RealmCommandError(description: "--from and --to name the same store") }
            do {
                let report = try await RealmMigration.run(keys: keys, config: config, from: source, to: target)
                for (table, rows) in report.counts { print("  \(table): \(rows) rows copied and compared") }
                print("Migrated \(source) to \(target): \(report.records) records opened with the realm's key, every row identical.")
            } catch let e as RealmStoreUnavailable {
                throw RealmCommandError(description: e.description)
            } catch let e as RealmMigrationError {
                throw RealmCommandError(description: e.description)
            }
            if updateConfig {
                var c = try RealmConfig.load(from: directory.configFile)
                c.store = to
                try c.save(to: directory.configFile)
                print("realm.json now names \(target) as the store.")
            } else {
                print("Set \"store\": \"\(target)\" in \(directory.configFile.path) (or pass --update-config) before serving again.")
            }
        }
    }
}
