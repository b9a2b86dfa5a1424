import PipectlTestSupport
import PostgresAdapter
import XCTest

/// Passwords in connection strings never reach a message: key=value strings are parsed by
/// libpq and rebuilt, URLs masked in place. Pure logic (no server); lives here because this is
/// the test target that may link libpq.
final class ConnectionStringTests: XCTestCase {
    func r(_ text: String) -> String { ConnectionString.redacted(text) }

    func testPlainKeyValue() {
        XCTAssertEqual(r("host=db user=app password=s3cret dbname=crm"), "user=app password=*** dbname=crm host=db")
    }

    /// `password = s3cret` was printed in full: libpq allows spaces around `=`.
    func testSpacesAroundTheEqualsSign() {
        XCTAssertEqual(r("host=db password = s3cret dbname=crm"), "password=*** dbname=crm host=db")
    }

    /// `password='s3cret tail'` leaked ` tail'`.
    func testQuotedPasswordWithASpace() {
        XCTAssertEqual(r("host=db password='s3cret tail' dbname=crm"), "password=*** dbname=crm host=db")
    }

    /// `password=s3cret\ tail` leaked ` tail`.
    func testBackslashEscapedSpace() {
        XCTAssertEqual(r(#"host=db password=s3cret\ tail dbname=crm"#), "password=*** dbname=crm host=db")
    }

    func testSSLKeyPasswordIsMaskedToo() {
        XCTAssertEqual(r("host=db sslpassword=k3y"), "host=db sslpassword=***")
    }

    func testValuesThatNeedQuotesAreQuotedBack() {
        XCTAssertEqual(
            r(#"host=db application_name='my app' options='-c x=\'y\''"#),
            #"host=db options='-c x=\'y\'' application_name='my app'"#)
    }

    /// A string libpq refuses is not echoed: its error text would quote the rest of it.
    func testUnparseableStringIsNotShown() {
        XCTAssertEqual(r("host=db password='s3cret"), "(unreadable connection string, not shown)")
    }

    func testURLForms() {
        XCTAssertEqual(r("postgresql://app:s3cret@db:5432/crm"), "postgresql://app:***@db:5432/crm")
        XCTAssertEqual(r("postgres://app:s3cr@t@db/crm?sslmode=require"), "postgres://app:***@db/crm?sslmode=require")
        XCTAssertEqual(r("postgresql://app@db/crm?password=s3cret&sslmode=require"), "postgresql://app@db/crm?password=***&sslmode=require")
        XCTAssertEqual(r("postgresql://db/crm?sslmode=require&sslpassword=k3y"), "postgresql://db/crm?sslmode=require&sslpassword=***")
        XCTAssertEqual(r("postgresql://app@db/crm"), "postgresql://app@db/crm")
    }
}

extension ConnectionStringTests {
    /// Connecting with such a string fails before libpq's error (which quotes it) is made.
    func testConnectingWithAnUnparseableStringDoesNotQuoteIt() {
        XCTAssertThrowsError(try PostgresConnection(url: "host=127.0.0.1 password=s3cret tail")) { error in
            XCTAssertEqual(
                "\(error)",
                "cannot read the PostgreSQL connection string: it is neither a postgresql:// URL nor valid key=value pairs (not shown: it may hold a password)")
        }
    }
}
