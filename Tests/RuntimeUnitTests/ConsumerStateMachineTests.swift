import Foundation
import KafkaAdapter
import XCTest

@testable import PipelineRuntime

/// One transition at a time of the consumer's lifecycle (`ConsumerStateMachine`): each test
/// feeds events with explicit times and asserts the exact actions and state. Several cover what
/// only the fault tests reached before (a re-created topic, a lost topic while the group
/// settles, a resync during a stash replay).
final class ConsumerStateMachineTests: XCTestCase {
    typealias Machine = ConsumerStateMachine<String>
    let t0 = Date(timeIntervalSinceReferenceDate: 1_000_000)

    func makeMachine(restart: Bool = false, idleExit: Double? = nil, batchSize: Int = 3) -> Machine {
        var configuration = Machine.Configuration(topic: "t", group: "pipectl.p.s")
        configuration.restartOnNewTopic = restart
        configuration.idleExit = idleExit
        configuration.batchSize = batchSize
        configuration.maxDelay = 0.2
        return Machine(configuration: configuration, now: t0)
    }

    /// A machine that joined and claimed partitions 0 and 1 of incarnation "A".
    func assignedMachine(restart: Bool = false, idleExit: Double? = nil, batchSize: Int = 3) -> Machine {
        var m = makeMachine(restart: restart, idleExit: idleExit, batchSize: batchSize)
        _ = m.partitionsAssigned([0, 1], at: t0)
        _ = m.claimed([0, 1], topicID: "A", starts: [0: 7], at: t0)
        return m
    }

    // MARK: joining and assignment

    func testStartsJoiningAndPollsEvery100ms() {
        var m = makeMachine()
        XCTAssertEqual(m.state, .joining)
        XCTAssertEqual(m.nextRead(at: t0), .poll(timeoutMs: 100))
    }

    func testAssignmentDrainsTheWriterDropsTheBatchThenClaims() {
        var m = makeMachine()
        XCTAssertEqual(m.partitionsAssigned([1, 0], at: t0), [.drainWriter(ignoreResync: true), .dropBatch, .claim([1, 0])])
        XCTAssertEqual(m.joinsCompleted, 1)
        XCTAssertEqual(m.state, .consuming)
        XCTAssertEqual(m.owned, [], "nothing is held before the claim commits")
    }

    func testClaimHoldsThePartitionsAndStartsUnstoredOnesAtZero() {
        var m = makeMachine()
        _ = m.partitionsAssigned([0, 1], at: t0)
        XCTAssertEqual(m.claimed([0, 1], topicID: "A", starts: [0: 7], at: t0 + 1), [0: 7, 1: 0])
        XCTAssertEqual(m.owned, [0, 1])
        XCTAssertEqual(m.topicID, "A")
        XCTAssertEqual(m.lastActivity, t0 + 1)
    }

    func testEmptyAssignmentLearnsTheTopicIDAndHoldsNothing() {
        var m = makeMachine()
        XCTAssertEqual(m.partitionsAssigned([], at: t0), [.drainWriter(ignoreResync: true), .dropBatch, .learnTopicID])
        m.topicIDLearned("A")
        XCTAssertEqual(m.owned, [])
        XCTAssertEqual(m.topicID, "A")
        XCTAssertEqual(m.state, .consuming)
    }

    func testDeclinedAssignmentWaitsForTheTopicAndJoinsAgainOnceItExists() {
        var m = makeMachine()
        _ = m.partitionsAssigned([0], at: t0)
        m.assignmentDeclined()
        XCTAssertEqual(m.state, .waitingForTopic)
        XCTAssertEqual(m.pollIdle(at: t0 + 1), [.handOver, .checkTopicExists])
        XCTAssertEqual(m.topicExists(), [.drainWriter(ignoreResync: false), .rejoin])
        m.rejoined()
        XCTAssertEqual(m.state, .consuming)
        XCTAssertEqual(m.pollIdle(at: t0 + 2), [.handOver])
    }

    // MARK: batches and group commit

    func testRecordOfAPartitionNotHeldIsSkippedButCountsAsActivity() {
        var m = assignedMachine()
        let step = m.messageArrived(partition: 5, writerIdle: true, at: t0 + 3)
        XCTAssertEqual(step.add, false)
        XCTAssertEqual(step.handOver, false)
        XCTAssertEqual(m.lastActivity, t0 + 3)
        XCTAssertFalse(m.hasBatch)
    }

    func testIdleWriterTakesTheBatchAtOnce() {
        var m = assignedMachine(batchSize: 100)
        let step = m.messageArrived(partition: 0, writerIdle: true, at: t0 + 1)
        XCTAssertEqual(step.add, true)
        XCTAssertEqual(step.handOver, true, "group commit: a light stream does not wait out max_delay_ms")
        XCTAssertEqual(m.handOverEnded(taken: true), [])
        XCTAssertFalse(m.hasBatch)
        XCTAssertNil(m.batchStartedAt)
    }

    func testBusyWriterLetsTheBatchGrowUpToBatchSize() {
        var m = assignedMachine(batchSize: 3)
        XCTAssertEqual(m.messageArrived(partition: 0, writerIdle: false, at: t0 + 1).handOver, false)
        XCTAssertEqual(m.messageArrived(partition: 1, writerIdle: false, at: t0 + 1.01).handOver, false)
        XCTAssertEqual(m.messageArrived(partition: 0, writerIdle: false, at: t0 + 1.02).handOver, true)
        XCTAssertEqual(m.batchCount, 3)
        XCTAssertEqual(m.batchStartedAt, t0 + 1)
    }

    func testPollWakesSoonWhileABatchWaitsAndNeverPastMaxDelay() {
        var m = assignedMachine(batchSize: 100)
        _ = m.messageArrived(partition: 0, writerIdle: false, at: t0 + 1)
        XCTAssertEqual(m.nextRead(at: t0 + 1), .poll(timeoutMs: 5))
        XCTAssertEqual(m.nextRead(at: t0 + 1.1975), .poll(timeoutMs: 2))
        XCTAssertEqual(m.nextRead(at: t0 + 1.5), .poll(timeoutMs: 1))
    }

    func testMaxDelayHandsTheBatchOverOnTheTick() {
        var m = assignedMachine(batchSize: 100)
        _ = m.messageArrived(partition: 0, writerIdle: false, at: t0 + 1)
        XCTAssertEqual(m.tick(at: t0 + 1.1), [])
        XCTAssertEqual(m.tick(at: t0 + 1.201), [.handOver])
    }

    func testIdlePollHandsOverWhatIsInHand() {
        var m = assignedMachine()
        XCTAssertEqual(m.pollIdle(at: t0 + 1), [.handOver])
    }

    func testBusyWriterPausesTheHeldPartitionsOnceAndResumesThemAfterwards() {
        var m = assignedMachine(batchSize: 1)
        _ = m.messageArrived(partition: 1, writerIdle: false, at: t0 + 1)
        XCTAssertEqual(m.writerBusy(), [.pause([0, 1])])
        XCTAssertEqual(m.state, .pausedForWriter)
        XCTAssertEqual(m.writerBusy(), [], "paused once per hand-over")
        m.stashed("r1")
        XCTAssertEqual(m.handOverEnded(taken: true), [.resume([0, 1])])
        XCTAssertEqual(m.state, .consuming)
        XCTAssertEqual(m.nextRead(at: t0 + 2), .replay(count: 1, generation: m.generation))
        XCTAssertEqual(m.takeStash(), ["r1"])
        XCTAssertEqual(m.nextRead(at: t0 + 2), .poll(timeoutMs: 100))
    }

    func testStashedRecordsAddedOnReplayDoNotCountAsNewActivity() {
        var m = assignedMachine(batchSize: 10)
        let step = m.messageArrived(partition: 0, fromStash: true, writerIdle: false, at: t0 + 9)
        XCTAssertEqual(step.add, true)
        XCTAssertEqual(m.lastActivity, t0)
    }

    // MARK: revokes and resyncs

    func testRevokeWhileTheWriterIsBusyDropsBatchAndStashAndResumesNothingHeld() {
        var m = assignedMachine(batchSize: 1)
        _ = m.messageArrived(partition: 0, writerIdle: false, at: t0 + 1)
        _ = m.writerBusy()
        m.stashed("r1")
        let generation = m.generation
        XCTAssertEqual(m.partitionsRevoked([0, 1]), [.logInfo("partitions 0, 1 revoked"), .drainWriterQuietly, .dropBatch, .forget([0, 1])])
        XCTAssertFalse(m.hasBatch, "the hand-over loop ends: nothing left to hand over")
        XCTAssertEqual(m.stash, [])
        XCTAssertEqual(m.generation, generation + 1)
        XCTAssertEqual(m.owned, [])
        // The hand-over that was waiting ends without the batch and resumes what it paused.
        XCTAssertEqual(m.handOverEnded(taken: false), [.resume([0, 1])])
        XCTAssertEqual(m.state, .consuming)
    }

    func testEmptyRevokeLogsNothing() {
        var m = assignedMachine()
        XCTAssertEqual(m.partitionsRevoked([]), [.drainWriterQuietly, .dropBatch, .forget([])])
        XCTAssertEqual(m.owned, [0, 1])
    }

    func testResyncSeeksOnlyHeldPartitionsAndRestartsTheIdleClock() {
        var m = assignedMachine(batchSize: 10)
        _ = m.messageArrived(partition: 0, writerIdle: false, at: t0 + 1)
        let actions = m.resyncNeeded(offsets: [0: 4, 1: -1, 9: 3], description: "reconnected", at: t0 + 5)
        XCTAssertEqual(actions, [.dropBatch, .logWarning("reconnected"), .seek([0: 4, 1: -1])])
        XCTAssertFalse(m.hasBatch)
        XCTAssertEqual(m.lastActivity, t0 + 5)
    }

    func testResyncWhileReplayingTheStashMakesTheRestStale() {
        var m = assignedMachine(batchSize: 10)
        _ = m.messageArrived(partition: 0, writerIdle: false, at: t0 + 1)
        _ = m.writerBusy()
        m.stashed("r1")
        m.stashed("r2")
        _ = m.handOverEnded(taken: true)
        guard case .replay(let count, let generation) = m.nextRead(at: t0 + 2) else { return XCTFail("expected a replay") }
        XCTAssertEqual(count, 2)
        XCTAssertEqual(m.takeStash(), ["r1", "r2"])
        XCTAssertEqual(m.messageArrived(partition: 0, fromStash: true, writerIdle: false, at: t0 + 2).add, true)
        // The hand-over of r1's batch finds the connection lost: back to the stored offsets.
        _ = m.resyncNeeded(offsets: [0: 3], description: "reconnected", at: t0 + 3)
        XCTAssertNotEqual(m.generation, generation, "r2 must not be added after the resync")
        XCTAssertFalse(m.hasBatch)
        XCTAssertEqual(m.nextRead(at: t0 + 3), .poll(timeoutMs: 100))
    }

    func testAssignmentDuringStashReplayAlsoMakesItStale() {
        var m = assignedMachine(batchSize: 10)
        m.stashed("r1")
        let generation = m.generation
        _ = m.partitionsAssigned([0], at: t0 + 1)
        XCTAssertEqual(m.stash, [])
        XCTAssertEqual(m.generation, generation + 1)
    }

    // MARK: the topic's incarnation

    func testTopicCheckRunsEveryTwoSecondsAndOnlyAfterAJoin() {
        var m = makeMachine()
        XCTAssertEqual(m.tick(at: t0 + 1), [])
        XCTAssertEqual(m.tick(at: t0 + 2.5), [.reportLag], "no join yet: nothing to compare")
        _ = m.partitionsAssigned([0], at: t0 + 3)
        XCTAssertEqual(m.tick(at: t0 + 4), [])
        XCTAssertEqual(m.tick(at: t0 + 4.6), [.checkTopic, .reportLag])
    }

    func testSameIncarnationClearsAMissingTopic() {
        var m = assignedMachine(restart: true)
        XCTAssertEqual(m.topicChecked(current: nil, at: t0 + 2), [.logInfo("topic t vanished; waiting for it to be created again")])
        XCTAssertEqual(m.state, .waitingForTopic)
        XCTAssertEqual(m.topicChecked(current: nil, at: t0 + 4), [], "logged once")
        XCTAssertEqual(m.topicChecked(current: "A", at: t0 + 6), [])
        XCTAssertEqual(m.state, .consuming)
    }

    func testRunJoinsAgainWhenTheTopicComesBackUnderANewID() {
        var m = assignedMachine(restart: true)
        _ = m.topicChecked(current: nil, at: t0 + 2)
        XCTAssertEqual(
            m.topicChecked(current: "B", at: t0 + 4),
            [.logInfo("topic t exists again (ID B); joining the group again"), .drainWriter(ignoreResync: false), .rejoin])
        XCTAssertEqual(m.topicID, "A", "the ID changes only when the new assignment's claim commits")
        XCTAssertNil(m.topicMissingSince)
    }

    func testTopicRecreatedWhileHoldingNothing() {
        // An empty assignment that could not learn the ID takes the first one seen...
        var m = makeMachine()
        _ = m.partitionsAssigned([], at: t0)
        m.topicIDLearned(nil)
        XCTAssertEqual(m.topicChecked(current: "A", at: t0 + 2), [])
        XCTAssertEqual(m.topicID, "A")
        // ...and a new incarnation afterwards is a lost topic for `consume`, with nothing to pause.
        XCTAssertEqual(m.topicChecked(current: "B", at: t0 + 4), [.pause([])])
        XCTAssertEqual(m.state, .topicLost)
        XCTAssertEqual(m.lostTopic?.error.message.hasPrefix("topic 't' was deleted and created again while consuming (ID A -> B)"), true)
    }

    func testConsumeLosesARecreatedTopicAndPausesWhatItHolds() {
        var m = assignedMachine()
        XCTAssertEqual(m.topicChecked(current: "B", at: t0 + 2), [.pause([0, 1])])
        XCTAssertEqual(m.state, .topicLost)
        XCTAssertEqual(m.topicChecked(current: nil, at: t0 + 4), [], "the first reason is kept")
        XCTAssertEqual(m.lostTopic?.error.message.contains("(ID A -> B)"), true)
    }

    func testLostTopicWaitsForTheJoinUnderWayToComplete() {
        var m = assignedMachine()
        _ = m.topicChecked(current: nil, at: t0 + 2)
        XCTAssertNil(m.failureDue(at: t0 + 3))
        _ = m.partitionsRevoked([0, 1])
        XCTAssertNil(m.failureDue(at: t0 + 4), "a revoke alone does not settle the group")
        _ = m.partitionsAssigned([0], at: t0 + 5)
        let error = m.failureDue(at: t0 + 5)
        XCTAssertEqual(error?.message.hasPrefix("topic 't' (ID A) vanished while consuming"), true)
        XCTAssertEqual(m.state, .finished)
    }

    func testLostTopicFailsAfterTenSecondsWithoutAJoin() {
        var m = assignedMachine()
        _ = m.topicChecked(current: nil, at: t0 + 2)
        XCTAssertNil(m.failureDue(at: t0 + 12))
        XCTAssertNotNil(m.failureDue(at: t0 + 12.01))
    }

    func testUnavailableTopicStillHeldByIDIsAPassingAnswer() {
        var m = assignedMachine()
        XCTAssertEqual(m.topicUnavailable("Broker: Unknown topic", stillHeld: true, at: t0 + 1), [])
        XCTAssertEqual(m.state, .consuming)
    }

    func testUnavailableTopicIsLostForConsume() {
        var m = assignedMachine()
        let actions = m.topicUnavailable("Broker: Unknown topic", stillHeld: false, at: t0 + 1)
        XCTAssertEqual(actions, [.pause([0, 1]), .logInfo("topic t is not on the broker right now; waiting for it"), .handOver])
        XCTAssertEqual(m.state, .topicLost)
        XCTAssertEqual(m.lostTopic?.error.message.hasPrefix("topic 't' vanished while consuming (Broker: Unknown topic)"), true)
    }

    func testUnavailableTopicBeforeTheFirstJoinIsWaitedFor() {
        var m = makeMachine()
        XCTAssertEqual(
            m.topicUnavailable("Unknown topic", stillHeld: nil, at: t0 + 1),
            [.logInfo("topic t is not on the broker right now; waiting for it"), .handOver])
        XCTAssertEqual(m.state, .waitingForTopic)
        XCTAssertEqual(m.pollIdle(at: t0 + 2), [.handOver, .checkTopicExists])
        XCTAssertEqual(m.topicExists(), [.drainWriter(ignoreResync: false), .rejoin])
        XCTAssertEqual(m.state, .joining)
    }

    func testRunWaitsForAnUnavailableTopic() {
        var m = assignedMachine(restart: true)
        XCTAssertEqual(
            m.topicUnavailable("Unknown topic", stillHeld: false, at: t0 + 1),
            [.logInfo("topic t is not on the broker right now; waiting for it"), .handOver])
        XCTAssertEqual(m.state, .waitingForTopic)
        XCTAssertNil(m.failureDue(at: t0 + 60))
    }

    // MARK: finishing

    func testEndOffsetsOfAnotherIncarnationNeverFinish() {
        let m = assignedMachine()
        XCTAssertFalse(m.isDone(target: ([0: 5, 1: 3], "B"), stored: { _ in 100 }, at: t0))
        XCTAssertTrue(m.isDone(target: ([0: 5, 1: 3], "A"), stored: { [0: 5, 1: 3][$0] }, at: t0))
        XCTAssertFalse(m.isDone(target: ([0: 5, 1: 3], "A"), stored: { [0: 5, 1: 2][$0] }, at: t0))
        XCTAssertTrue(m.isDone(target: ([0: 5, 1: 0], nil), stored: { [0: 5][$0] }, at: t0), "an empty partition is done")
        XCTAssertFalse(m.isDone(target: nil, stored: { _ in 100 }, at: t0), "no target yet: the producer is still sending")
    }

    func testIdleExitBeforeTheFirstAssignmentIsAnErrorAfterAMinute() throws {
        let m = makeMachine(idleExit: 3)
        XCTAssertEqual(try m.idleExitCheck(writerIdle: true, at: t0 + 30), .keepConsuming)
        XCTAssertThrowsError(try m.idleExitCheck(writerIdle: true, at: t0 + 61)) { error in
            XCTAssertEqual((error as? KafkaError)?.message.hasPrefix("the consumer group 'pipectl.p.s' did not complete a join in 61 s"), true)
        }
    }

    func testIdleExitConfirmsTheIncarnationFirst() throws {
        let m = assignedMachine(idleExit: 3)
        XCTAssertEqual(try m.idleExitCheck(writerIdle: true, at: t0 + 2), .keepConsuming)
        XCTAssertEqual(try m.idleExitCheck(writerIdle: false, at: t0 + 4), .keepConsuming, "the writer still stores a batch")
        XCTAssertEqual(try m.idleExitCheck(writerIdle: true, at: t0 + 4), .confirmTopic)
        XCTAssertEqual(m.idleExitTopicConfirmed("A"), .finish)
        XCTAssertEqual(m.idleExitTopicConfirmed("B"), .checkTopicAndContinue)
        XCTAssertEqual(m.idleExitTopicConfirmed(nil), .checkTopicAndContinue)
    }

    func testIdleExitNeverHidesAMissingOrLostTopic() throws {
        var run = assignedMachine(restart: true, idleExit: 3)
        _ = run.topicChecked(current: nil, at: t0 + 1)
        XCTAssertEqual(try run.idleExitCheck(writerIdle: true, at: t0 + 30), .keepConsuming)
        var consume = assignedMachine(idleExit: 3)
        _ = consume.topicChecked(current: "B", at: t0 + 1)
        XCTAssertEqual(try consume.idleExitCheck(writerIdle: true, at: t0 + 9), .keepConsuming)
    }

    func testFinishedIsFinal() {
        var m = assignedMachine()
        m.finished()
        XCTAssertEqual(m.state, .finished)
    }
}
