// swift-tools-version:6.1
import PackageDescription

let strict: [SwiftSetting] = [.swiftLanguageMode(.v6)]

let package = Package(
    name: "Coffer",
    platforms: [.macOS(.v15), .iOS(.v18)],
    products: [
        .library(name: "CofferCore", targets: ["CofferCore"]),
        .library(name: "CofferStorage", targets: ["CofferStorage"]),
        .library(name: "CofferS3", targets: ["CofferS3"]),
        .library(name: "CofferWebDAV", targets: ["CofferWebDAV"]),
        .library(name: "CofferBackup", targets: ["CofferBackup"]),
        .library(name: "CofferVault", targets: ["CofferVault"]),
        .library(name: "CofferRealm", targets: ["CofferRealm"]),
        // What an app links: the kit and the modules its API and docs/LIBRARY.md's flow use
        // (LocalStorage, VaultClient, BackupError...), so one product declares every import.
        .library(name: "CofferKit", targets: ["CofferKit", "CofferCore", "CofferStorage", "CofferBackup", "CofferVault"]),
        .library(name: "CofferTesting", targets: ["CofferTesting"]),
        .executable(name: "coffer", targets: ["coffer"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.0.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.5.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.80.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.24.0"),
        .package(url: "https://github.com/apple/swift-async-algorithms.git", from: "1.0.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.6.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.0.0"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.7.0"),
        // Prometheus text exposition for the realm's /metrics (a swift-metrics backend).
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.0.0"),
        // PostgreSQL realm store (issue 16): PostgresClient with a connection pool. Realm server only.
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.0"),
    ],
    targets: [
        // zlib (present on Linux and in Apple SDKs) for compressing database chunks.
        .systemLibrary(name: "CZlib", providers: [.apt(["zlib1g-dev"])]),
        // The one POSIX layer (stat, open, read/write loops, fsync with F_FULLFSYNC on Apple,
        // durable renames); `package` API, in no product of its own.
        .target(name: "CofferPosix", swiftSettings: strict),
        // Pure core: key, subkeys, chunking, format, crypto envelope. No I/O but the device's
        // private files (PrivateFile).
        .target(
            name: "CofferCore",
            dependencies: [
                "CZlib", "CofferPosix",
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strict),
        // One Storage protocol and the local-folder backend.
        .target(
            name: "CofferStorage",
            dependencies: ["CofferPosix"],
            swiftSettings: strict),
        // S3-compatible backend (SigV4 of our own, HTTP through async-http-client).
        .target(
            name: "CofferS3",
            dependencies: [
                "CofferCore", "CofferStorage",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),
        // WebDAV backend (Basic/Digest auth, MOVE-based atomic writes) and rclone remotes served over
        // loopback WebDAV. Reuses CofferS3's XML reader, request gate and date arithmetic.
        .target(
            name: "CofferWebDAV",
            dependencies: [
                "CofferCore", "CofferStorage", "CofferS3",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),
        // Backup engine: repository, pipeline, SQLite capture, restore, check, prune.
        .target(
            name: "CofferBackup",
            dependencies: [
                "CofferCore", "CofferStorage", "CofferPosix",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "AsyncAlgorithms", package: "swift-async-algorithms"),
            ],
            swiftSettings: strict),
        // Backup Key Vault: wire protocol, channel, Shamir, client flows.
        .target(
            name: "CofferVault",
            dependencies: [
                "CofferCore",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "CryptoExtras", package: "swift-crypto"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "JWTKit", package: "jwt-kit"),
            ],
            swiftSettings: strict),
        // The realm server.
        .target(
            name: "CofferRealm",
            dependencies: [
                "CofferCore", "CofferVault",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "CryptoExtras", package: "swift-crypto"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "PostgresNIO", package: "postgres-nio",
                         condition: .when(platforms: [.linux, .macOS])),
            ],
            swiftSettings: strict),
        // The `coffer` command: parses arguments and calls the libraries.
        .executableTarget(
            name: "coffer",
            dependencies: [
                "CofferCore", "CofferStorage", "CofferS3", "CofferWebDAV", "CofferBackup", "CofferVault", "CofferRealm", "CofferKit",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "GRDB", package: "GRDB.swift"),
            ],
            swiftSettings: strict),
        // What an app embeds: one type over the engine and the vault with every protection of the
        // CLI (anchored heads, pending vault changes, the device home's layout).
        .target(
            name: "CofferKit",
            dependencies: ["CofferCore", "CofferStorage", "CofferBackup", "CofferVault"],
            swiftSettings: strict),
        // For people who write a storage backend or embed Coffer: an in-memory storage, a
        // fault-injecting wrapper, the storage conformance suite (Swift Testing) and
        // `withRealmCluster`, real realms on loopback for the span of a test.
        .target(
            name: "CofferTesting",
            dependencies: [
                "CofferStorage", "CofferVault", "CofferRealm",
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strict),
        .testTarget(name: "CofferCoreTests", dependencies: ["CofferCore", .product(name: "Crypto", package: "swift-crypto")],
                    resources: [.copy("Vectors")], swiftSettings: strict),
        .testTarget(name: "CofferStorageTests",
                    dependencies: ["CofferStorage", "CofferS3", "CofferWebDAV", "CofferCore", "CofferTesting",
                                   .product(name: "Crypto", package: "swift-crypto"),
                                   .product(name: "AsyncHTTPClient", package: "async-http-client"),
                                   .product(name: "NIOCore", package: "swift-nio"),
                                   .product(name: "NIOHTTP1", package: "swift-nio")],
                    swiftSettings: strict),
        .testTarget(name: "CofferBackupTests",
                    dependencies: ["CofferBackup", "CofferStorage", "CofferCore", "CofferTesting", "CofferPosix", .product(name: "GRDB", package: "GRDB.swift"),
                                   .product(name: "Crypto", package: "swift-crypto")],
                    swiftSettings: strict),
        .testTarget(name: "CofferVaultTests",
                    dependencies: ["CofferVault", "CofferRealm", "CofferCore",
                                   .product(name: "Crypto", package: "swift-crypto"),
                                   .product(name: "CryptoExtras", package: "swift-crypto"),
                                   .product(name: "AsyncHTTPClient", package: "async-http-client"),
                                   .product(name: "NIOCore", package: "swift-nio"),
                                   .product(name: "GRDB", package: "GRDB.swift"),
                                   .product(name: "Hummingbird", package: "hummingbird"),
                                   .product(name: "JWTKit", package: "jwt-kit"),
                                   .product(name: "Logging", package: "swift-log"),
                                   .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")],
                    resources: [.copy("Vectors")], swiftSettings: strict),
        .testTarget(name: "CofferKitTests",
                    dependencies: ["CofferKit", "CofferBackup", "CofferCore", "CofferStorage", "CofferVault", "CofferTesting"],
                    swiftSettings: strict),
        // Runs the real `coffer` binary that `swift build` made; imports no module of the package.
        .testTarget(name: "CofferCLITests", dependencies: [], swiftSettings: strict),
    ]
)
