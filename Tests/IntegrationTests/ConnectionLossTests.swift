import Foundation
import PipectlTestSupport
import PostgresAdapter
import XCTest

/// How a connection the server ended is classified: every caller that retries (the writer, the
/// producer's send checkpoints) relies on `connectionLost`, so a server-side end of the session
/// must never look like an ordinary SQL error.
final class ConnectionLossTests: XCTestCase {
    /// The server ends the session (`pg_terminate_backend`: FATAL 57P01, then the socket
    /// closes); the next statements on that connection fail as a lost connection, and a new
    /// connection works.
    func testTerminatedSessionIsALostConnection() throws {
        let victim = try TestStack.connect()
        let pid = try victim.int("SELECT pg_backend_pid()")
        XCTAssertGreaterThan(pid, 0)
        XCTAssertEqual(try TestStack.connect().query("SELECT pg_terminate_backend(\(pid))").first?[0], "t")
        for attempt in 1...2 {
            do {
                _ = try victim.query("SELECT 1")
                XCTFail("attempt \(attempt): a query on a terminated session succeeded")
            } catch let error as PostgresError {
                XCTAssertTrue(error.connectionLost, "attempt \(attempt): \(error.message) (SQLSTATE \(error.sqlState ?? "none"))")
                XCTAssertEqual(error.code, .connectionFailure)
            }
        }
        XCTAssertFalse(victim.isConnected)
        XCTAssertEqual(try TestStack.connect().int("SELECT 41 + 1"), 42)
    }

    /// The server crashes (`pg_ctl stop -m immediate`: a WARNING to each session, then the socket
    /// closes) and comes back; statements on the old connection fail as a lost connection,
    /// whether libpq notices while sending or while reading.
    func testCrashedServerIsALostConnection() throws {
        let idle = try TestStack.connect()
        let busy = try TestStack.connect()
        XCTAssertEqual(try busy.int("SELECT 1"), 1)
        try TestStack.stack!.stopDatabase(mode: "immediate")
        defer { _ = try? TestStack.stack!.up(log: { _ in }) }
        for (name, connection) in [("idle", idle), ("busy", busy)] {
            for attempt in 1...2 {
                do {
                    _ = try connection.query("SELECT $1::int", ["\(attempt)"])
                    XCTFail("\(name), attempt \(attempt): a query on a crashed server succeeded")
                } catch let error as PostgresError {
                    XCTAssertTrue(error.connectionLost, "\(name), attempt \(attempt): \(error.message) (SQLSTATE \(error.sqlState ?? "none"))")
                }
            }
        }
        _ = try TestStack.stack!.up(log: { _ in })
        XCTAssertEqual(try TestStack.connect().int("SELECT 41 + 1"), 42)
    }
}
