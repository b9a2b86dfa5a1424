import Foundation
import PipelineCompiler
import PostgresAdapter

/// `pipectl dlq replay`: decodes dead-lettered payloads again with the current spec and loads
/// the ones that now pass, removing them from the dead-letter table in the same transaction.
public struct DeadLetterReplay {
    let pipeline: Pipeline
    let flow: Flow
    let url: String

    /// - Parameters:
    /// - flow: the sink's flow; only its dead letters are replayed (by sink name).
    /// - url: the sink database's connection string.
    public init(pipeline: Pipeline, flow: Flow, url: String) {
        self.pipeline = pipeline
        self.flow = flow
        self.url = url
    }

    /// Counts of one replay: `attempted` dead letters read back (those of stage `source` are never
    /// replayed), `loaded` now stored (and their dead letters deleted), `stillFailing` kept, with
    /// their reason brought up to date.
    public struct Result { public var attempted = 0, loaded = 0, stillFailing = 0 }

    /// Applies the sink's DDL, then replays every dead letter of the sink, oldest first, one
    /// transaction per record. Does nothing for a flow without transforms.
    /// - Throws: `PostgresError` (connection, DDL, or a statement other than the row's own failure).
    public func run() throws -> Result {
        guard !flow.transforms.isEmpty else { return Result() }
        var decoder = RecordDecoder(chain: flow.transforms)
        let sink = try PostgresSink(pipeline: pipeline, flow: flow, columnList: flow.sink.columnList, url: url)
        try sink.applyDDL()
        let table = SQL.qualified(Bookkeeping.schema, pipeline.bookkeeping.deadLetters)
        let rows = try sink.query(
            """
            SELECT "id", encode("payload", 'base64') FROM \(table)
            WHERE "sink" = $1 AND "stage" <> 'source' ORDER BY "id"
            """, [flow.sink.name])
        var result = Result()
        for row in rows {
            guard let idText = row[0], let b64 = row[1], let payload = Data(base64Encoded: b64, options: .ignoreUnknownCharacters) else { continue }
            result.attempted += 1
            var batch = RowBatch()
            let outcome = Array(payload).withUnsafeBytes { decoder.decode($0, into: &batch.rows) }
            switch outcome {
            case .row(let id, _):
                try sink.sources.appendKey(id, to: &batch.rows)
                batch.rowRanges.append(0..<batch.rows.count)
                batch.rowOrigins.append(RowOrigin(partition: -1, offset: -1, recordID: id, holder: CopiedPayload(Array(payload))))
                if try sink.replay(batch, deadLetterID: idText, table: table) { result.loaded += 1 } else { result.stillFailing += 1 }
            case .rejected(_, let rejected):
                _ = try sink.query("UPDATE \(table) SET \"reason\" = $2 WHERE \"id\" = $1", [idText, rejected.reason])
                result.stillFailing += 1
            }
        }
        return result
    }
}

extension PostgresSink {
    /// Thrown inside the replay's transaction to roll it back: the row still fails.
    private struct StillFailing: Error { var reason: String }

    /// Loads one replayed row and deletes its dead letter, together; false if it still fails
    /// (then nothing it wrote stays, and the dead letter's reason is brought up to date).
    func replay(_ batch: RowBatch, deadLetterID: String, table: String) throws -> Bool {
        let keyed = batch
        do {
            try conn.withTransaction {
                var dead: [(RowOrigin, RejectedRecord)] = []
                _ = try writeRows(keyed, indices: [0], dead: &dead)
                if let (_, rejected) = dead.first { throw StillFailing(reason: rejected.reason) }
                try conn.query("DELETE FROM \(table) WHERE \"id\" = $1", [deadLetterID])
            }
            return true
        } catch let failing as StillFailing {
            try conn.query("UPDATE \(table) SET \"reason\" = $2 WHERE \"id\" = $1", [deadLetterID, failing.reason])
            return false
        }
    }
}
