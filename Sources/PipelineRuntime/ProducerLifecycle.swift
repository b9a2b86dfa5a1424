/// The producer side of `run` for one topic, as a state machine: events in, actions out, no I/O
/// (the shape of postgres-nio's `ConnectionStateMachine`). `PipelineRunner` performs the actions
/// (send a file, check the topic's ID, wake the consumers) and feeds back what happened.
///
/// A topic is fed by `sourceCount` files, sent one after another into the same incarnation of
/// the topic. Once all are sent the consumers may stop at the end offsets (`delivered`). Until
/// every consumer is done the topic is watched: a broker that keeps topics in memory can lose it
/// on a restart, and then every file is sent again from its first record (the new topic ID makes
/// the send checkpoints start over; record ids make the repeats harmless).
///
///     idle ─start→ sending(0) + consumers start (once, in parallel with the first file's check)
///     sending(i) ─sourceSent→ sending(i+1) … ─sourceSent(last)→ watching
///     watching ─topicChecked(same ID)→ watching      ─topicChecked(other ID)→ sending(0)
///     watching ─consumersFinished→ finished          any ─sendFailed→ failed
///     idle, sending, watching ─stopRequested→ stopped
public struct ProducerLifecycle: Sendable, Equatable {
    /// Where every record of every file went: the end offset of each partition (the largest
    /// over the files) and the topic incarnation they were delivered to.
    public struct Delivered: Sendable, Equatable {
        /// Per partition, the offset after the last delivered record (Kafka's end offset), the largest
        /// over the topic's files; a partition no record went to is absent.
        public var endOffsets: [Int32: Int64]
        /// The ID of the topic incarnation the records went to (Kafka's topic ID, KIP-516, in
        /// librdkafka's base64 form); it changes when the topic is deleted and created again.
        public var topicID: String

        /// Memberwise.
        public init(endOffsets: [Int32: Int64], topicID: String) {
            self.endOffsets = endOffsets
            self.topicID = topicID
        }

        /// Adds one file's end offsets: per partition the larger one.
        func merging(_ offsets: [Int32: Int64]) -> Delivered {
            Delivered(endOffsets: endOffsets.merging(offsets, uniquingKeysWith: max), topicID: topicID)
        }
    }

    /// Where the topic's producer is: from `idle` through one `sending` per file to `watching`,
    /// then `finished`; or `failed` / `stopped`.
    public enum State: Sendable, Equatable {
        /// Not started.
        case idle
        /// Sending file `source` (checking it against its checkpoint first); `sent` is what the
        /// files before it delivered, nil for the first.
        case sending(source: Int, sent: Delivered?)
        /// Every file is sent; the topic is watched until the consumers are done.
        case watching(Delivered)
        /// The consumers are done (or never needed: nothing to wait for).
        case finished(Delivered?)
        /// A file could not be sent; the consumers stop after what is on the topic.
        case failed(message: String)
        /// Ctrl-C / SIGTERM; what was delivered before, if every file was.
        case stopped(Delivered?)
    }

    /// What the driver tells the machine: a send's outcome, a topic-ID check, the consumers
    /// being done, a stop request.
    public enum Event: Sendable, Equatable {
        case start
        /// The file being sent is on the topic: its end offsets and the topic's ID.
        case sourceSent(endOffsets: [Int32: Int64], topicID: String)
        case sendFailed(message: String)
        /// The topic's current ID (nil: the broker does not know the topic).
        case topicChecked(topicID: String?)
        /// Every consumer of the topic returned.
        case consumersFinished
        case stopRequested
    }

    /// What the driver must do next, in order; performing one may produce an event.
    public enum Action: Sendable, Equatable {
        /// Send file `source` from its checkpoint (`again`: after a lost topic, say so).
        case send(source: Int, again: Bool)
        /// Start the topic's consumers (once, at the start: their group join, about 1 s on Tansu,
        /// overlaps the first file's checkpoint check and snapshot). A consumer whose file is
        /// then refused leaves only once its join completed (`TopicLoader.Options.joinBeforeLeaving`).
        case startConsumers
        /// Let the consumers stop at these end offsets.
        case publish(Delivered)
        /// The published end offsets are void (the topic was lost); consumers wait again.
        case withdraw
        /// Check the topic's ID after the watch interval (unless the consumers finish first).
        case checkTopicLater
        /// The consumers stop after what is on the topic; the run reports the error.
        case fail(message: String)
        /// The producer thread ends.
        case exit
    }

    /// Where the lifecycle stands; changed only by the event handlers.
    public private(set) var state: State = .idle
    /// How many files feed the topic (at least 1), sent in the order of the topic's `from:`.
    public let sourceCount: Int
    /// Whether `startConsumers` was given already.
    public private(set) var consumersStarted = false
    /// The consumers returned while files were still being sent (they failed): the sends
    /// finish, and then there is nothing left to watch the topic for.
    public private(set) var consumersDone = false

    /// A lifecycle in `.idle` for a topic fed by `sourceCount` files.
    /// - Precondition: `sourceCount > 0`.
    public init(sourceCount: Int) {
        precondition(sourceCount > 0, "a produced topic has at least one source")
        self.sourceCount = sourceCount
    }

    /// What `until` gives the consumers: the end offsets once every file is delivered, empty
    /// offsets once the producer failed or stopped (stop after what is there), else nil (wait).
    public var consumerBound: (offsets: [Int32: Int64], topicID: String?)? {
        switch state {
        case .watching(let d), .finished(let d?), .stopped(let d?): return (d.endOffsets, d.topicID)
        case .failed, .stopped(nil), .finished(nil): return ([:], nil)
        case .idle, .sending: return nil
        }
    }

    /// Applies `event`; returns what to do, in order.
    public mutating func handle(_ event: Event) -> [Action] {
        switch (state, event) {
        case (_, .stopRequested):
            switch state {
            case .finished, .failed, .stopped: return []
            case .watching(let delivered): state = .stopped(delivered)
            default: state = .stopped(nil)
            }
            return [.exit]
        case (.idle, .start):
            state = .sending(source: 0, sent: nil)
            consumersStarted = true
            return [.startConsumers, .send(source: 0, again: false)]
        case (.sending(let source, let sent), .sourceSent(let offsets, let topicID)):
            let delivered: Delivered
            if let sent {
                // Files before this one went to another incarnation: they are gone with it.
                guard sent.topicID == topicID else {
                    state = .sending(source: 0, sent: nil)
                    return [.send(source: 0, again: true)]
                }
                delivered = sent.merging(offsets)
            } else {
                delivered = Delivered(endOffsets: offsets, topicID: topicID)
            }
            if source + 1 < sourceCount {
                state = .sending(source: source + 1, sent: delivered)
                return [.send(source: source + 1, again: false)]
            }
            if consumersDone {
                state = .finished(delivered)
                return [.publish(delivered), .exit]
            }
            state = .watching(delivered)
            return [.publish(delivered), .checkTopicLater]
        case (.sending, .sendFailed(let message)):
            state = .failed(message: message)
            return [.fail(message: message), .exit]
        case (.watching(let delivered), .topicChecked(let id)):
            guard id == delivered.topicID else {
                state = .sending(source: 0, sent: nil)
                return [.withdraw, .send(source: 0, again: true)]
            }
            return [.checkTopicLater]
        case (.watching(let delivered), .consumersFinished):
            state = .finished(delivered)
            return [.exit]
        case (.sending, .consumersFinished):
            // The consumers returned before the files were sent (they failed): the send in
            // progress and the rest end on their own; then the thread exits.
            consumersDone = true
            return []
        case (.idle, .consumersFinished):
            state = .finished(nil)
            return [.exit]
        default:
            // Events that do not apply in the state (a late topic check, a second finish).
            return []
        }
    }
}
