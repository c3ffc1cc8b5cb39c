// swift-tools-version:6.1
// The libFuzzer harnesses for Coffer's network-facing parsers. A separate package, so that the
// main package's build and its dependents never see `-sanitize=fuzzer`. Build and run through
// `scripts/fuzz` (see docs/FUZZING.md); the harnesses themselves live in the libraries behind
// `@_spi(Fuzzing)`, so the test suite replays the very same code.
import PackageDescription

let package = Package(
    name: "CofferFuzz",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "Coffer", path: ".."),
    ],
    targets: [
        .executableTarget(
            name: "CofferFuzz",
            dependencies: [
                .product(name: "CofferCore", package: "Coffer"),
                .product(name: "CofferVault", package: "Coffer"),
                .product(name: "CofferRealm", package: "Coffer"),
                .product(name: "CofferS3", package: "Coffer"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]),
    ]
)
