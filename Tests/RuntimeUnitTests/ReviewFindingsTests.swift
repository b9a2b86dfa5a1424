import Foundation
import KafkaAdapter
import XCTest

@testable import PipelineRuntime

/// REVIEW FINDINGS (branch `review`, 2026-11-29): unit tests for faults found by attacking the
/// merged runtime with real runs. Each names the finding it proves (see the review report).
final class ReviewFindingsTests: XCTestCase {
    typealias Machine = ConsumerStateMachine<String>
    let t0 = Date(timeIntervalSinceReferenceDate: 1_000_000)

    func makeMachine() -> Machine {
        Machine(configuration: Machine.Configuration(topic: "t", group: "pipectl.p.s"), now: t0)
    }

    /// R2: a producer that fails right after the consumers started (a later source of the topic
    /// refused) publishes the "stop now" target `([:], nil)`. The consumer must not leave before
    /// its first join completed: Tansu keeps a member that leaves mid-join as the group's leader,
    /// and every later `run` of the pipeline then hangs at "stored 0" (reproduced: two sources,
    /// the second changed; `run` exits 1, then `run --as-new-source` never loads a row, and
    /// `consume` says the group did not complete a join in 60 s).
    func testFailedProducerDoesNotMakeTheConsumerLeaveInTheMiddleOfItsFirstJoin() {
        var m = makeMachine()
        XCTAssertEqual(m.state, .joining)
        XCTAssertFalse(m.isDone(target: ([:], nil), stored: { _ in nil }, at: t0 + 0.1), "still joining: wait for the join")
        XCTAssertFalse(m.isDone(target: ([0: 0], nil), stored: { _ in nil }, at: t0 + 0.1), "an empty file: wait for the join too")
        // The join completes: now the consumer may stop.
        _ = m.partitionsAssigned([0], at: t0 + 1)
        _ = m.claimed([0], topicID: "A", starts: [:], at: t0 + 1)
        XCTAssertTrue(m.isDone(target: ([:], nil), stored: { _ in nil }, at: t0 + 1.1))
    }

    /// R2, the other half: a join that never completes (the group is already stuck) must not
    /// keep a failed run waiting for ever: after `lostTopicGrace` the consumer stops.
    func testFailedProducerStopsTheConsumerAfterTheGraceWithoutAJoin() {
        let m = makeMachine()
        XCTAssertFalse(m.isDone(target: ([:], nil), stored: { _ in nil }, at: t0 + 9))
        XCTAssertTrue(m.isDone(target: ([:], nil), stored: { _ in nil }, at: t0 + 11))
    }
}
