// swift-tools-version:6.0
// The Swift example network plugin as its own package, the way a plugin developer outside the Berth repository
// builds one: it depends on Berth for the product BerthPluginKit and builds one dynamic library,
// .build/debug/libberth-swiftnet.so. Here Berth is a path dependency named "Berth" (a path dependency's
// identity is otherwise its directory's name, which depends on where the repository was cloned). From your own
// repository, use `.package(url: "https://<your-git-host>/berth.git", exact: "<version>")` and
// `.product(name: "BerthPluginKit", package: "berth")` (the identity is the URL's last component).
// SwiftPM resolves all of Berth's dependencies for it, but compiles only the kit's three small targets.
import PackageDescription

let package = Package(
    name: "berth-swiftnet",
    products: [
        .library(name: "berth-swiftnet", type: .dynamic, targets: ["BerthSwiftNet"]),
    ],
    dependencies: [
        .package(name: "Berth", path: "../../.."),
    ],
    targets: [
        .target(name: "BerthSwiftNet", dependencies: [.product(name: "BerthPluginKit", package: "Berth")]),
    ]
)
