import CofferKit
import CofferStorage
import CofferTesting
import CofferVault
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// CofferTesting's `withRealmCluster`: the realms really serve a vault during the body (a key is
/// protected and recovered through them), with the count and threshold asked for, and nothing is
/// left listening or on disk once the body has returned or thrown.
@Suite("CofferTesting: withRealmCluster")
struct WithRealmClusterTests {
    struct Planned: Error {}

    /// Whether something accepts TCP connections at `url`'s port on loopback (a refused connect is
    /// immediate: no waiting involved).
    static func listening(_ url: String) throws -> Bool {
        let port = try #require(URL(string: url)?.port)
        #if canImport(Glibc)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #else
        let fd = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        try #require(fd >= 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        return rc == 0
    }

    @Test("3 realms, threshold 2: a key is protected and recovered with a realm down; all stopped and removed after")
    func servesAVaultThenStops() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-with-cluster-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let repo = root.appendingPathComponent("repo").path
        var seen: (urls: [String], folder: URL)?
        let recovered = try await withRealmCluster(count: 3, threshold: 2) { cluster in
            seen = (cluster.realmURLs, cluster.directory)
            #expect(cluster.count == 3 && cluster.threshold == 2)
            let written = try VaultConfiguration.load(from: cluster.vaultConfigurationURL)
            #expect(written == cluster.vaultConfiguration)
            #expect(written.threshold == 2 && written.realms.map(\.url) == cluster.realmURLs)
            #expect(try written.registrationPolicy() == fastTestVaultPolicy)
            for url in cluster.realmURLs { #expect(try Self.listening(url), "\(url) does not listen during the body") }

            let phone = DeviceHome(root.appendingPathComponent("phone"))
            let vault = VaultAccess(client: try cluster.vaultClient(repairStore: phone.vaultRepairs), user: "bob")
            let (created, _) = try await Backups.create(storage: try LocalStorage(root: repo, create: true), home: phone,
                                                        vault: vault, password: "pw")

            // One realm of three down: two still recover the key (t = 2).
            await cluster.stopRealm(1)
            #expect(!cluster.isRunning(realm: 1) && cluster.isRunning(realm: 2))
            #expect(try !Self.listening(cluster.realmURLs[0]))
            let newPhone = DeviceHome(root.appendingPathComponent("new-phone"))
            let again = try await Backups.recover(
                storage: try LocalStorage(root: repo), home: newPhone,
                vault: VaultAccess(client: try cluster.vaultClient(repairStore: newPhone.vaultRepairs), user: "bob"), password: "pw")
            return again.repositoryID == created.repositoryID
        }
        #expect(recovered, "the key recovered through the cluster opens the same repository")
        let (urls, folder) = try #require(seen)
        for url in urls { #expect(try !Self.listening(url), "\(url) still listens after withRealmCluster returned") }
        #expect(!FileManager.default.fileExists(atPath: folder.path), "the realms' temporary folder was not removed")
    }

    @Test("a body that throws: the error comes out and every realm is stopped; a given directory is kept")
    func stopsWhenTheBodyThrows() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("coffer-with-cluster-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        var urls: [String] = []
        await #expect(throws: Planned.self) {
            try await withRealmCluster(directory: root) { cluster in
                urls = cluster.realmURLs
                for url in urls { #expect(try Self.listening(url)) }
                throw Planned()
            }
        }
        #expect(urls.count == 5)
        for url in urls { #expect(try !Self.listening(url), "\(url) still listens after the body threw") }
        #expect(FileManager.default.fileExists(atPath: root.appendingPathComponent("vault.json").path),
                "the directory the caller gave is kept")
    }
}
