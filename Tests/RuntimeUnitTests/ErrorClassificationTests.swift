// How errors are classified: codes built once from SQLSTATE / librdkafka codes, and the
// texts of typed runtime errors (tests and users match on them). Pure values, no I/O.
import KafkaAdapter
import PipelineRuntime
import PostgresAdapter
import XCTest

final class ErrorClassificationTests: XCTestCase {
    /// PostgreSQL Appendix A: class 08 is a connection exception, 22 data, 23 constraints.
    func testPostgresCodesComeFromSQLSTATE() {
        XCTAssertEqual(PostgresError("x", sqlState: "23505").code, .uniqueViolation)
        XCTAssertEqual(PostgresError("x", sqlState: "23502").code, .notNullViolation)
        XCTAssertEqual(PostgresError("x", sqlState: "23P01").code, .otherConstraintViolation("23P01"))
        XCTAssertEqual(PostgresError("x", sqlState: "22003").code, .dataException("22003"))
        XCTAssertEqual(PostgresError("x", sqlState: "42P01").code, .undefinedTable)
        XCTAssertEqual(PostgresError("x", sqlState: "08006").code, .connectionFailure)
        // The server ending the session: admin_shutdown, crash_shutdown, cannot_connect_now.
        XCTAssertEqual(PostgresError("x", sqlState: "57P01").code, .connectionFailure)
        XCTAssertEqual(PostgresError("x", sqlState: "57P02").code, .connectionFailure)
        XCTAssertEqual(PostgresError("x", sqlState: "57P03").code, .connectionFailure)
        XCTAssertTrue(PostgresError("x", sqlState: "57P01").connectionLost)
        XCTAssertEqual(PostgresError("x", sqlState: "57014").code, .queryCanceled)
        XCTAssertEqual(PostgresError("x", sqlState: "40001").code, .other("40001"))
        XCTAssertEqual(PostgresError("pipectl's own").code, .other(nil))
        // A broken connection wins over whatever SQLSTATE the last result carried.
        XCTAssertEqual(PostgresError("x", sqlState: "57P01", connectionLost: true).code, .connectionFailure)
    }

    func testPostgresClassesDriveRetryAndDeadLettering() {
        let unique = PostgresError("duplicate key", sqlState: "23505", constraint: "t__pipectl_record")
        XCTAssertTrue(unique.isConstraintViolation)
        XCTAssertFalse(unique.isDataException)
        XCTAssertFalse(unique.connectionLost)
        XCTAssertTrue(PostgresError("out of range", sqlState: "22003").isDataException)
        XCTAssertTrue(PostgresError("gone", connectionLost: true).connectionLost)
        XCTAssertTrue(PostgresError("gone", sqlState: "08003").connectionLost)
        XCTAssertEqual(
            PostgresError("bad row", sqlState: "23514", detail: "Failing row contains (1).").description,
            "bad row (Failing row contains (1).)")
    }

    func testKafkaKindsComeFromLibrdkafkaCodes() {
        XCTAssertEqual(KafkaError("pipectl's own").kind, .local)
        XCTAssertEqual(KafkaError("too large", code: 10).kind, .messageTooLarge)  // MSG_SIZE_TOO_LARGE
        XCTAssertTrue(KafkaError("too large", code: 10).isMessageTooLarge)
        XCTAssertEqual(KafkaError("no topic", code: 3).kind, .unknownTopic)  // UNKNOWN_TOPIC_OR_PART
        XCTAssertEqual(KafkaError("down", code: -187).kind, .brokerUnreachable)  // _ALL_BROKERS_DOWN
        XCTAssertEqual(KafkaError("slow", code: -185).kind, .timedOut)  // _TIMED_OUT
        XCTAssertEqual(KafkaError("other", code: 36).kind, .other(36))
    }

    func testTypedRuntimeErrorsKeepTheirTexts() {
        let detected = TopicIncarnationError(message: "topic 't' vanished while consuming")
        XCTAssertEqual(detected.reason, .detected)
        XCTAssertEqual(detected.description, "topic 't' vanished while consuming")
        let refusal = SchemaCheck.Refusal(
            table: "\"public\".\"sales\"", sink: "sales_db",
            reasons: ["column \"tax\" is integer in the database but text in schema 's'; pipectl never changes a column's type"])
        XCTAssertEqual(
            refusal.description,
            "table \"public\".\"sales\" does not fit sink 'sales_db': column \"tax\" is integer in the database but text in schema 's'; pipectl never changes a column's type"
        )
        XCTAssertEqual(FencedError(partitions: [0, 2]).description, "partitions 0, 2 now belong to another consumer; batch dropped")
    }
}
