"""Peer (a), the seed's consumer style: confluent-kafka consumer, psycopg2, one INSERT per
row, COMMIT per batch, then the Kafka offset commit.

    python peer_a_psycopg2_rows.py --brokers B --topic T --group G --dsn URL --table housing_a
"""
import psycopg2

import common

args = common.parse_args(__doc__)
conn = psycopg2.connect(args.dsn)
cur = conn.cursor()
columns = ", ".join(common.COLUMNS)
placeholders = ", ".join(["%s"] * len(common.COLUMNS))
sql = f'INSERT INTO "{args.table}" ({columns}) VALUES ({placeholders})'


def write(payloads):
    for payload in payloads:
        cur.execute(sql, common.row_of(payload))
    conn.commit()


common.Run(args).run(write)
conn.close()
