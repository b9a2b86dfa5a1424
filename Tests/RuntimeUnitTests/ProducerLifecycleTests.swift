import XCTest

@testable import PipelineRuntime

/// `ProducerLifecycle`, one transition at a time: each test asserts the exact actions and state.
final class ProducerLifecycleTests: XCTestCase {
    typealias Delivered = ProducerLifecycle.Delivered

    /// One file: start the consumers and send it, publish its end offsets, watch.
    func testOneFileIsSentThenPublishedThenWatched() {
        var machine = ProducerLifecycle(sourceCount: 1)
        XCTAssertNil(machine.consumerBound)
        XCTAssertFalse(machine.consumersStarted)
        XCTAssertEqual(machine.handle(.start), [.startConsumers, .send(source: 0, again: false)])
        XCTAssertEqual(machine.state, .sending(source: 0, sent: nil))
        XCTAssertTrue(machine.consumersStarted)
        XCTAssertNil(machine.consumerBound, "consumers wait until the file is delivered")
        let delivered = Delivered(endOffsets: [0: 506], topicID: "T1")
        XCTAssertEqual(machine.handle(.sourceSent(endOffsets: [0: 506], topicID: "T1")), [.publish(delivered), .checkTopicLater])
        XCTAssertEqual(machine.state, .watching(delivered))
        XCTAssertEqual(machine.consumerBound?.offsets, [0: 506])
        XCTAssertEqual(machine.consumerBound?.topicID, "T1")
        XCTAssertEqual(machine.handle(.topicChecked(topicID: "T1")), [.checkTopicLater])
        XCTAssertEqual(machine.state, .watching(delivered))
        XCTAssertEqual(machine.handle(.consumersFinished), [.exit])
        XCTAssertEqual(machine.state, .finished(delivered))
        XCTAssertEqual(machine.handle(.topicChecked(topicID: "T2")), [], "a late topic check changes nothing")
        XCTAssertEqual(machine.state, .finished(delivered))
    }

    /// Two files into one topic: sent one after the other; the consumers start once and the
    /// published end offsets are the larger of the two per partition.
    func testTwoFilesAreSentInTurnAndTheirEndOffsetsMerged() {
        var machine = ProducerLifecycle(sourceCount: 2)
        XCTAssertEqual(machine.handle(.start), [.startConsumers, .send(source: 0, again: false)])
        XCTAssertEqual(machine.handle(.sourceSent(endOffsets: [0: 10, 1: 7], topicID: "T1")), [.send(source: 1, again: false)], "consumers start once")
        XCTAssertEqual(machine.state, .sending(source: 1, sent: Delivered(endOffsets: [0: 10, 1: 7], topicID: "T1")))
        XCTAssertNil(machine.consumerBound, "consumers wait for the second file")
        let delivered = Delivered(endOffsets: [0: 10, 1: 12, 2: 3], topicID: "T1")
        XCTAssertEqual(machine.handle(.sourceSent(endOffsets: [0: 4, 1: 12, 2: 3], topicID: "T1")), [.publish(delivered), .checkTopicLater])
        XCTAssertEqual(machine.state, .watching(delivered))
    }

    /// The second file went to a new incarnation of the topic: the first file's records are
    /// gone with the old one, so both are sent again.
    func testATopicLostBetweenFilesSendsEveryFileAgain() {
        var machine = ProducerLifecycle(sourceCount: 2)
        _ = machine.handle(.start)
        _ = machine.handle(.sourceSent(endOffsets: [0: 10], topicID: "T1"))
        XCTAssertEqual(machine.handle(.sourceSent(endOffsets: [0: 5], topicID: "T2")), [.send(source: 0, again: true)])
        XCTAssertEqual(machine.state, .sending(source: 0, sent: nil))
        XCTAssertNil(machine.consumerBound)
    }

    /// A broker restart lost the topic while the consumers were still storing: the end offsets
    /// are withdrawn and the file is sent again; the new ones are published.
    func testALostTopicWhileWatchingWithdrawsAndSendsAgain() {
        var machine = ProducerLifecycle(sourceCount: 1)
        _ = machine.handle(.start)
        _ = machine.handle(.sourceSent(endOffsets: [0: 506], topicID: "T1"))
        XCTAssertEqual(machine.handle(.topicChecked(topicID: nil)), [.withdraw, .send(source: 0, again: true)], "the consumers run already")
        XCTAssertEqual(machine.state, .sending(source: 0, sent: nil))
        XCTAssertNil(machine.consumerBound)
        let delivered = Delivered(endOffsets: [0: 506], topicID: "T2")
        XCTAssertEqual(machine.handle(.sourceSent(endOffsets: [0: 506], topicID: "T2")), [.publish(delivered), .checkTopicLater])
        XCTAssertEqual(
            machine.handle(.topicChecked(topicID: "T3")), [.withdraw, .send(source: 0, again: true)],
            "a re-created topic (new ID) counts as lost too")
    }

    /// A file that cannot be sent fails the production; consumers stop after what is there.
    func testASendFailureFailsAndBoundsTheConsumers() {
        var machine = ProducerLifecycle(sourceCount: 2)
        _ = machine.handle(.start)
        XCTAssertEqual(machine.handle(.sendFailed(message: "no such file")), [.fail(message: "no such file"), .exit])
        XCTAssertEqual(machine.state, .failed(message: "no such file"))
        XCTAssertEqual(machine.consumerBound?.offsets, [:])
        XCTAssertNil(machine.consumerBound?.topicID)
        XCTAssertTrue(machine.consumersStarted, "started with the send; the bound lets them leave after their join")
        XCTAssertEqual(machine.handle(.stopRequested), [])
    }

    /// Consumers that returned early (they failed) while files were being sent: the sends end,
    /// then the producer exits instead of watching the topic.
    func testConsumersDoneWhileSendingExitsAfterTheLastFile() {
        var machine = ProducerLifecycle(sourceCount: 1)
        _ = machine.handle(.start)
        XCTAssertEqual(machine.handle(.consumersFinished), [])
        XCTAssertTrue(machine.consumersDone)
        let delivered = Delivered(endOffsets: [0: 3], topicID: "T1")
        XCTAssertEqual(machine.handle(.sourceSent(endOffsets: [0: 3], topicID: "T1")), [.publish(delivered), .exit])
        XCTAssertEqual(machine.state, .finished(delivered))
    }

    /// Ctrl-C while watching keeps the delivered end offsets; while sending there are none.
    func testStopKeepsWhatWasDelivered() {
        var watching = ProducerLifecycle(sourceCount: 1)
        _ = watching.handle(.start)
        _ = watching.handle(.sourceSent(endOffsets: [0: 8], topicID: "T1"))
        XCTAssertEqual(watching.handle(.stopRequested), [.exit])
        XCTAssertEqual(watching.state, .stopped(Delivered(endOffsets: [0: 8], topicID: "T1")))
        XCTAssertEqual(watching.consumerBound?.offsets, [0: 8])

        var sending = ProducerLifecycle(sourceCount: 1)
        _ = sending.handle(.start)
        XCTAssertEqual(sending.handle(.stopRequested), [.exit])
        XCTAssertEqual(sending.state, .stopped(nil))
        XCTAssertEqual(sending.consumerBound?.offsets, [:])
    }
}
