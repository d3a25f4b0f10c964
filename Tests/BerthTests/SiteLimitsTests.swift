// Site settings that feed arithmetic on times are bounded by the schema: a value that would overflow a deadline in
// nanoseconds is refused when the site is read, naming the key, instead of trapping berthd later.
@testable import BerthPlugins
import BerthWire
import XCTest

final class SiteLimitsTests: XCTestCase {
    func testHugeCallTimeoutIsRefused() throws {
        let site: JSON = ["site": "unit", "callTimeoutMs": JSON(Int64(9_000_000_000_000_000))]
        XCTAssertThrowsError(try SiteConfig.parse(site.bytes, baseDir: "/tmp")) { e in
            XCTAssertTrue("\(e)".contains("callTimeoutMs"), "\(e)")
            XCTAssertTrue("\(e)".contains("86400000"), "\(e)")
        }
        let day: JSON = ["site": "unit", "callTimeoutMs": 86_400_000]
        XCTAssertEqual(try SiteConfig.parse(day.bytes, baseDir: "/tmp").callTimeoutMs, 86_400_000)
    }
}
