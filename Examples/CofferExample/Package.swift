// swift-tools-version:6.1
// An app that embeds Coffer, as docs/LIBRARY.md describes it: a package of its own that depends on
// Coffer (here by path; an app names the repository URL and a version) and links the CofferKit
// product only. CofferKitTests/ExamplePackageTests builds and runs it.
import PackageDescription

let package = Package(
    name: "CofferExample",
    platforms: [.macOS(.v15), .iOS(.v18)],
    dependencies: [
        .package(name: "Coffer", path: "../.."),
    ],
    targets: [
        .executableTarget(
            name: "coffer-example",
            dependencies: [.product(name: "CofferKit", package: "Coffer")],
            swiftSettings: [.swiftLanguageMode(.v6)]),
    ]
)
