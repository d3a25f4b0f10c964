// swift-tools-version:6.0
// Berth: a minimal host daemon for container platforms, extended by plugins loaded through a stable C ABI.
import PackageDescription

let package = Package(
    name: "Berth",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "berthd", targets: ["berthd"]),
        .executable(name: "berth", targets: ["berth"]),
        .executable(name: "berth-cni", targets: ["berth-cni"]),
        .executable(name: "berth-bench", targets: ["berth-bench"]),
        .executable(name: "berth-plugin-runner", targets: ["berth-plugin-runner"]),
        // Reference plugins: shared objects named libberth-<name>.so
        .library(name: "berth-hello", type: .dynamic, targets: ["BerthHelloPlugin"]),
        .library(name: "berth-hello-swift", type: .dynamic, targets: ["BerthHelloSwiftPlugin"]),
        .library(name: "berth-ipam-pool", type: .dynamic, targets: ["BerthIpamPoolPlugin"]),
        .library(name: "berth-storage-local", type: .dynamic, targets: ["BerthStorageLocalPlugin"]),
        .library(name: "berth-sched-stateful", type: .dynamic, targets: ["BerthSchedStatefulPlugin"]),
        .library(name: "berth-discovery-dns", type: .dynamic, targets: ["BerthDiscoveryDNSPlugin"]),
        .library(name: "berth-runtime-oci", type: .dynamic, targets: ["BerthRuntimeOCIPlugin"]),
        // runtime-oci's per-instance monitor; the plugin looks for it beside its .so.
        .executable(name: "berth-runtime-monitor", targets: ["BerthRuntimeMonitor"]),
        // Test fixture: the Swift kit's runtime glue, loaded by Tests/suites/runtime-oci.sh.
        .library(name: "berth-kit-runtime-echo", type: .dynamic, targets: ["BerthKitRuntimeEcho"]),
        // The Swift plugin kit, for plugin authors.
        .library(name: "BerthPluginKit", targets: ["BerthPluginKit"]),
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    ],
    targets: [
        // The whole ABI in one header (PluginABI/include/berth_plugin.h).
        .target(
            name: "BerthPluginABI",
            path: "PluginABI",
            exclude: ["Kit"],
            sources: ["src"],
            publicHeadersPath: "include"
        ),
        // Swift plugin kit: write a plugin without touching raw pointers. No dependencies beyond the ABI.
        .target(name: "BerthPluginKit", dependencies: ["BerthPluginABI", "BerthJSONText"], path: "PluginABI/Kit"),
        // JSON string escaping and number formatting into bytes, shared by the kit and the host (stdlib only).
        .target(name: "BerthJSONText", path: "PluginABI/JSONText"),

        .systemLibrary(name: "CSQLite", path: "Host/CSQLite"),
        // Lean wire helpers shared by the CLI and berth-cni: unix-socket HTTP client and a small JSON value.
        .target(name: "BerthWire", dependencies: ["BerthJSONText"], path: "Host/BerthWire"),
        // The daemon, as modules whose dependencies point one way: store -> plugins -> kinds -> scheduler -> core
        // (the composition root) -> server. The store is the only module that speaks SQL.
        .target(name: "BerthStore", dependencies: ["CSQLite", "BerthWire", .product(name: "NIOCore", package: "swift-nio"),
                                                   .product(name: "NIOPosix", package: "swift-nio"), .product(name: "NIOSSL", package: "swift-nio-ssl")],
                path: "Host/BerthStore"),
        // Loader, plugin instances, host services, the registry, site configuration and reload, process isolation.
        .target(
            name: "BerthPlugins",
            dependencies: ["BerthPluginABI", "BerthStore", "BerthWire",
                           .product(name: "Logging", package: "swift-log"), .product(name: "Crypto", package: "swift-crypto")],
            path: "Host/BerthPlugins"
        ),
        // One coordinator per plugin kind (network with its CNI adapter, storage, discovery, the scheduler kind).
        .target(name: "BerthKinds", dependencies: ["BerthPluginABI", "BerthPlugins", "BerthStore", "BerthWire", .product(name: "Logging", package: "swift-log")], path: "Host/BerthKinds"),
        // Nodes, apps and instances, and the core scheduler: a pipeline of named steps.
        .target(name: "BerthScheduler", dependencies: ["BerthPluginABI", "BerthKinds", "BerthPlugins", "BerthStore", "BerthWire"],
                path: "Host/BerthScheduler"),
        // The composition root: builds the plugin host and every coordinator from what each requires.
        .target(
            name: "BerthCore",
            dependencies: ["BerthScheduler", "BerthKinds", "BerthPlugins", "BerthStore", "BerthWire", .product(name: "Logging", package: "swift-log")],
            path: "Host/BerthCore"
        ),
        // `berth plugin check`: the conformance suites of every kind, run on the real loader, store and executor.
        .target(name: "BerthCheck", dependencies: ["BerthCore"], path: "Host/BerthCheck"),
        // The HTTP API (unix socket, optional TCP with a bearer token, served over TLS unless on loopback).
        .target(
            name: "BerthServer",
            dependencies: [
                "BerthCore",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            path: "Host/BerthServer",
            // The operator console at /ui/: plain files compiled into the binary (PackageResources.<file>_<ext>).
            resources: ["index.html", "console.css", "favicon.svg", "app.js", "dom.js", "site.js", "networks.js", "workloads.js",
                        "storage.js", "events.js"].map { .embedInCode("Console/\($0)") }
                + [.embedInCode("openapi.json")]  // served at GET /openapi.json
        ),
        .executableTarget(
            name: "berthd",
            dependencies: ["BerthServer", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Host/berthd"
        ),
        .executableTarget(
            name: "berth",
            dependencies: ["BerthCheck", "BerthCore", "BerthWire", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Host/berth"
        ),
        // A runtime execs berth-cni for every call: it is a fully static executable (Swift runtime and C library
        // linked in), so start-up does no dynamic loading at all: about 0.9 ms here, against 2.4 ms with only the
        // Swift runtime static and 4.7 ms fully dynamic (scripts/bench, section startup).
        .executableTarget(name: "berth-cni", dependencies: ["BerthWire"], path: "Host/berth-cni",
                          linkerSettings: [.unsafeFlags(["-static-executable"])]),
        // Loads one plugin in a child process and serves the ABI over a socket pair (isolation: "process"): the runner's
        // side of the protocol; the frames it shares with berthd are in BerthPlugins (Isolation/).
        .executableTarget(name: "berth-plugin-runner", dependencies: ["BerthPluginABI", "BerthPlugins"], path: "Host/berth-plugin-runner"),
        .executableTarget(name: "berth-bench", dependencies: ["BerthCheck", "BerthCore", "BerthServer", "BerthWire", .product(name: "Logging", package: "swift-log")], path: "Host/berth-bench"),

        // Reference plugins.
        .target(name: "BerthHelloPlugin", dependencies: ["BerthPluginABI"], path: "Plugins/hello", publicHeadersPath: "."),
        .target(name: "BerthHelloSwiftPlugin", dependencies: ["BerthPluginKit"], path: "Plugins/hello-swift"),
        .target(name: "BerthIpamPoolPlugin", dependencies: ["BerthPluginKit"], path: "Plugins/ipam-pool"),
        .target(name: "BerthStorageLocalPlugin", dependencies: ["BerthPluginKit"], path: "Plugins/storage-local"),
        // The small JSON reader the C reference plugins share (linked into each, its symbols hidden).
        .target(name: "BerthSpanJSON", path: "Plugins/span-json"),
        .target(name: "BerthSchedStatefulPlugin", dependencies: ["BerthPluginABI", "BerthSpanJSON"], path: "Plugins/sched-stateful", publicHeadersPath: "."),
        .target(name: "BerthDiscoveryDNSPlugin", dependencies: ["BerthPluginKit"], path: "Plugins/discovery-dns"),
        .target(name: "BerthRuntimeOCIPlugin", dependencies: ["BerthPluginABI", "BerthSpanJSON"], path: "Plugins/runtime-oci",
                exclude: ["monitor", "README.md"], publicHeadersPath: "."),
        .executableTarget(name: "BerthRuntimeMonitor", path: "Plugins/runtime-oci/monitor"),
        .target(name: "BerthKitRuntimeEcho", dependencies: ["BerthPluginKit"], path: "Tests/Fixtures/kit-runtime"),

        .testTarget(
            name: "BerthTests",
            dependencies: ["BerthCheck", "BerthCore", "BerthServer", "BerthWire"],
            path: "Tests/BerthTests"
        ),
    ],
    swiftLanguageModes: [.v5]
)
