// libFuzzer entry for the site file parser (Host/BerthPlugins/Site.swift: JSON, schema validation, then the
// fields): any bytes either parse into a configuration or fail with a SiteError naming the problems.
@testable import BerthCore
@testable import BerthPlugins

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSite(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    do {
        let c = try SiteConfig.parse(bytes, baseDir: "/fuzz/site")
        _ = c.json.serialized
        if c.listen != nil && c.token == nil { fatalError("accepted api.listen without api.token") }
        if Set(c.plugins.map { $0.name }).count != c.plugins.count { fatalError("accepted duplicate plugin names") }
    } catch let e as SiteError {
        if e.problems.isEmpty || e.problems.contains(where: { $0.isEmpty }) { fatalError("a SiteError without a problem: \(e)") }
    } catch {
        fatalError("SiteConfig.parse threw something else than a SiteError: \(error)")
    }
    return 0
}
