import Foundation
import PipelineRuntime
import StatusServer
import XCTest

/// The progress line and the collapsing of repeated librdkafka lines.
final class ProgressAndRepeatsTests: XCTestCase {
    func testProgressLineShowsCountsRatePercentAndETA() {
        let before = ProgressCounts(sent: 40_000, stored: 30_000, deadLetters: 1, lag: 10_000, bytesRead: 4_000_000, bytesTotal: 10_000_000)
        let now = ProgressCounts(sent: 60_000, stored: 50_000, deadLetters: 2, lag: 10_000, bytesRead: 6_000_000, bytesTotal: 10_000_000)
        XCTAssertEqual(
            ProgressLine.render(now: now, previous: before, seconds: 2),
            "sent 60000 · stored 50000 · dead letters 2 · 10000 rows/s · lag 10000 · 60% read · ETA 4 s")
        XCTAssertEqual(
            ProgressLine.render(now: ProgressCounts(stored: 7, lag: 3), previous: nil, seconds: 0),
            "stored 7 · dead letters 0 · 0 rows/s · lag 3")
    }

    func testRepeatedLinesAreCollapsedWithACount() {
        let collapser = RepeatCollapser(window: 10)
        let t0 = Date(timeIntervalSince1970: 1_000)
        let line = "librdkafka FAIL: 127.0.0.1:9092/bootstrap: Connect to ipv4#127.0.0.1:9092 failed: Connection refused (after 0ms in state CONNECT)"
        XCTAssertEqual(collapser.offer(line, now: t0), [line])
        for i in 1...37 {
            XCTAssertEqual(
                collapser.offer(line.replacingOccurrences(of: "after 0ms", with: "after \(i % 3)ms"), now: t0.addingTimeInterval(Double(i) * 0.2)), [])
        }
        XCTAssertEqual(collapser.offer("librdkafka CGRPSTATE: something else", now: t0.addingTimeInterval(8)), ["librdkafka CGRPSTATE: something else"])
        // After the window the next one is shown, with the count of the burst before it.
        XCTAssertEqual(collapser.offer(line, now: t0.addingTimeInterval(10)), [line + " (repeated 37 more times in 10 s)", line])
        XCTAssertEqual(collapser.offer(line, now: t0.addingTimeInterval(11)), [])
        XCTAssertEqual(collapser.flush(now: t0.addingTimeInterval(12)), [line + " (repeated 1 more time in 2 s)"])
    }
}
