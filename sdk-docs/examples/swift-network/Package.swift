// swift-tools-version:6.0
// The Swift example network plugin as its own package, the way a plugin developer outside the Berth repository
// builds one: it depends on Berth (here by path; from your own repository, use
// `.package(url: "https://<your-git-host>/berth.git", exact: "<version>")`) for the product BerthPluginKit, and
// builds one dynamic library, .build/debug/libberth-swiftnet.so.
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
