import Foundation
import PipectlTestSupport
import PostgresAdapter
import XCTest

/// The DAG shapes beyond one source -> topic -> transform -> sink, through the real pipectl
/// binary against Tansu and PostgreSQL: a chain of two transforms, one topic read by two
/// sinks (sent once, consumed by two groups), and two source files into one topic.
final class DAGTests: XCTestCase {
    /// topic -> person_rows (casts age to integer) -> adult_rows (renames full_name to who,
    /// widens age to numeric(6,1), needs a name): each stored value is the second transform's,
    /// a record the first transform refuses and one only the second refuses are dead letters
    /// naming their stage, and the first transform's table gets its own values.
    func testChainOfTwoTransformsStoresTheLastTransformsValues() throws {
        let spec = try SpecFolder(
            "it_dag_chain", files: ["people.csv": "Full Name,Age,Town\nAda Lovelace,36,London\nAlan Turing,41,Wilmslow\nBad Age,abc,X\n,50,Nowhere\n"],
            body: """
                sources:
                  - { name: people_csv, type: csv, path: people.csv }
                topics:
                  - { name: it_dag_chain-data, from: people_csv, brokers: BROKERS }
                schemas:
                  - name: person
                    columns:
                      - { name: full_name, type: text }
                      - { name: age, type: integer }
                  - name: adult
                    columns:
                      - { name: who, type: text, nullable: false }
                      - { name: age, type: "numeric(6,1)" }
                transforms:
                  - { name: person_rows, from: it_dag_chain-data, schema: person, drop: [Town] }
                  - { name: adult_rows, from: person_rows, schema: adult, rename: { full_name: who } }
                sinks:
                  - { name: adults_db, type: postgres, from: adult_rows, url: URL, table: it_dag_adults, batch_size: 100, max_delay_ms: 100 }

                """)
        let run = try pipectl(["run", spec.specPath, "--allow-dead-letters"])
        XCTAssertEqual(run.status, 0, run.output)
        XCTAssertTrue(run.output.contains("rows read:          4\n"), run.output)
        XCTAssertTrue(run.output.contains("rows loaded:        2\n"), run.output)
        XCTAssertTrue(run.output.contains("dead-lettered:      2\n"), run.output)
        XCTAssertTrue(run.output.contains("reconciled:         yes (4 read = 2 rows + 2 dead letters stored for this file)"), run.output)
        XCTAssertEqual(
            try rows(
                """
                SELECT "who", "age"::text, "_pipectl_record" & ((1::bigint << 40) - 1) FROM "it_dag_adults" ORDER BY 3
                """), [["Ada Lovelace", "36.0", "1"], ["Alan Turing", "41.0", "2"]])
        XCTAssertEqual(
            try rows(
                """
                SELECT "source_ordinal", "stage", "reason" FROM "pipectl"."it_dag_chain__dead_letters" ORDER BY 1
                """),
            [
                ["3", "cast", "column 'age': 'abc' is not a valid integer"],
                ["4", "cast", "transform 'adult_rows': column 'who' is not nullable and field 'who' is null"],
            ])
    }

    /// One topic read by two sinks: the file is sent once (each group's stored offset is the
    /// record count, not twice it), and each sink stores its own transform's values.
    func testTopicReadByTwoSinksIsSentOnceAndLoadedIntoBoth() throws {
        let spec = try SpecFolder(
            "it_dag_fan", files: ["prices.csv": "sku,price,shop\nA-1,10.50,north\nB-2,3.25,south\nA-1,11.00,south\n"],
            body: """
                sources:
                  - { name: prices_csv, type: csv, path: prices.csv }
                topics:
                  - { name: it_dag_fan-data, from: prices_csv, brokers: BROKERS, key: [sku] }
                schemas:
                  - name: price_history
                    columns:
                      - { name: sku, type: text, nullable: false }
                      - { name: price, type: "numeric(10,2)", nullable: false }
                      - { name: shop, type: text }
                  - name: price_now
                    columns:
                      - { name: sku, type: text, primary_key: true }
                      - { name: price, type: "numeric(10,2)", nullable: false }
                transforms:
                  - { name: history_rows, from: it_dag_fan-data, schema: price_history }
                  - { name: latest_rows, from: it_dag_fan-data, schema: price_now, drop: [shop] }
                sinks:
                  - { name: history_db, type: postgres, from: history_rows, url: URL, table: it_dag_history, batch_size: 100, max_delay_ms: 100 }
                  - { name: latest_db, type: postgres, from: latest_rows, url: URL, table: it_dag_latest, mode: upsert, key: [sku], batch_size: 100, max_delay_ms: 100 }

                """)
        let run = try pipectl(["run", spec.specPath])
        XCTAssertEqual(run.status, 0, run.output)
        XCTAssertTrue(run.output.contains("Summary (history_db):\n  rows read:          3\n  rows sent:          3\n  rows loaded:        3\n"), run.output)
        XCTAssertTrue(
            run.output.contains("Summary (latest_db):\n  rows read:          3\n  rows sent:          3\n  rows inserted:      2\n  rows updated:       1"),
            run.output)
        XCTAssertEqual(
            try rows(
                """
                SELECT "sku", "price"::text, "shop", "_pipectl_record" & ((1::bigint << 40) - 1) FROM "it_dag_history" ORDER BY 4
                """), [["A-1", "10.50", "north", "1"], ["B-2", "3.25", "south", "2"], ["A-1", "11.00", "south", "3"]])
        XCTAssertEqual(try rows(#"SELECT "sku", "price"::text FROM "it_dag_latest" ORDER BY 1"#), [["A-1", "11.00"], ["B-2", "3.25"]])
        // Sent once: three records on the topic, each group stored up to offset 3.
        XCTAssertEqual(
            try rows(#"SELECT "sink", "next_offset"::text FROM "pipectl"."it_dag_fan__offsets" ORDER BY 1"#),
            [["history_db", "3"], ["latest_db", "3"]])

        // Again: nothing sent, nothing new stored in either table.
        let again = try pipectl(["run", spec.specPath])
        XCTAssertEqual(again.status, 0, again.output)
        XCTAssertTrue(again.output.contains("rows sent:          0\n  rows loaded:        0\n"), again.output)
        XCTAssertTrue(
            again.output.contains("reconciled:         yes (nothing sent: loaded by an earlier run; 2 rows + 0 dead letters of this file stored)"), again.output
        )
        XCTAssertEqual(try TestStack.connect().int(#"SELECT count(*) FROM "it_dag_history""#), 3)
        XCTAssertEqual(
            try rows(#"SELECT "sink", "next_offset"::text FROM "pipectl"."it_dag_fan__offsets" ORDER BY 1"#),
            [["history_db", "3"], ["latest_db", "3"]])
    }

    /// Two files into one topic: each keeps its own source number and ordinals, the consumer
    /// stops once both are sent, and a second run sends and stores nothing.
    func testTwoSourcesIntoOneTopicKeepTheirOwnRecordIDs() throws {
        let spec = try SpecFolder(
            "it_dag_merge",
            files: [
                "north.csv": "code,qty\nN1,1\nN2,2\n",
                "south.csv": "code,qty\nS1,10\nS2,20\nS3,30\n",
            ],
            body: """
                sources:
                  - { name: north_csv, type: csv, path: north.csv }
                  - { name: south_csv, type: csv, path: south.csv }
                topics:
                  - { name: it_dag_merge-data, from: [north_csv, south_csv], brokers: BROKERS }

                """ + SpecFolder.stockRows(from: "it_dag_merge-data", sinks: [("stock_db", "it_dag_stock", nil)]))
        let run = try pipectl(["run", spec.specPath])
        XCTAssertEqual(run.status, 0, run.output)
        XCTAssertTrue(run.output.contains("rows read:          5\n  rows sent:          5\n  rows loaded:        5\n"), run.output)
        XCTAssertTrue(run.output.contains("reconciled:         yes (5 read = 5 rows + 0 dead letters stored for this file)"), run.output)
        XCTAssertEqual(
            try rows(
                """
                SELECT s."source", s."path", t."code", t."qty"::text, t."_pipectl_record" & ((1::bigint << 40) - 1)
                FROM "it_dag_stock" t JOIN "pipectl"."it_dag_merge__sources" s ON s."source_id" = t."_pipectl_record" >> 40
                ORDER BY 1, 5
                """),
            [
                ["north_csv", spec.dir + "/north.csv", "N1", "1", "1"], ["north_csv", spec.dir + "/north.csv", "N2", "2", "2"],
                ["south_csv", spec.dir + "/south.csv", "S1", "10", "1"], ["south_csv", spec.dir + "/south.csv", "S2", "20", "2"],
                ["south_csv", spec.dir + "/south.csv", "S3", "30", "3"],
            ])
        XCTAssertEqual(try rows(#"SELECT "next_offset"::text FROM "pipectl"."it_dag_merge__offsets""#), [["5"]])

        let again = try pipectl(["run", spec.specPath])
        XCTAssertEqual(again.status, 0, again.output)
        XCTAssertTrue(again.output.contains("rows read:          5\n  rows sent:          0\n  rows loaded:        0\n"), again.output)
        XCTAssertTrue(again.output.contains("reconciled:         yes (5 read = 5 rows + 0 dead letters stored for this file)"), again.output)
        XCTAssertEqual(try TestStack.connect().int(#"SELECT count(*) FROM "it_dag_stock""#), 5)
    }

    /// `produce` sends every source of a topic (not only the first one of its `from:`), each with
    /// its own record ids, and `consume` then stores all of them.
    func testProduceSendsEverySourceOfATopic() throws {
        let spec = try SpecFolder(
            "it_dag_produce",
            files: [
                "east.csv": "code,qty\nE1,7\n",
                "west.csv": "code,qty\nW1,70\nW2,80\n",
            ],
            body: """
                sources:
                  - { name: east_csv, type: csv, path: east.csv }
                  - { name: west_csv, type: csv, path: west.csv }
                topics:
                  - { name: it_dag_produce-data, from: [east_csv, west_csv], brokers: BROKERS }

                """ + SpecFolder.stockRows(from: "it_dag_produce-data", sinks: [("stock_db", "it_dag_produce", nil)]))
        let produce = try pipectl(["produce", spec.specPath])
        XCTAssertEqual(produce.status, 0, produce.output)
        XCTAssertTrue(produce.output.contains("Produced 1 records from east.csv to it_dag_produce-data"), produce.output)
        XCTAssertTrue(produce.output.contains("Produced 2 records from west.csv to it_dag_produce-data"), produce.output)
        let consume = try pipectl(["consume", spec.specPath, "--idle-exit", "3"])
        XCTAssertEqual(consume.status, 0, consume.output)
        XCTAssertEqual(
            try rows(
                """
                SELECT s."source", t."code", t."qty"::text, t."_pipectl_record" & ((1::bigint << 40) - 1)
                FROM "it_dag_produce" t JOIN "pipectl"."it_dag_produce__sources" s ON s."source_id" = t."_pipectl_record" >> 40
                ORDER BY 1, 4
                """),
            [["east_csv", "E1", "7", "1"], ["west_csv", "W1", "70", "1"], ["west_csv", "W2", "80", "2"]])
    }
}
