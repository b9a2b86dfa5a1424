"""Peer (b), the strongest simple peer: confluent-kafka consumer, psycopg 3, one COPY per
batch (`cursor.copy` + `write_row`), COMMIT, then the Kafka offset commit.

    python peer_b_psycopg3_copy.py --brokers B --topic T --group G --dsn URL --table housing_b --batch 10000
"""
import psycopg

import common

args = common.parse_args(__doc__)
conn = psycopg.connect(args.dsn)
columns = ", ".join(common.COLUMNS)
copy_sql = f'COPY "{args.table}" ({columns}) FROM STDIN'


def write(payloads):
    with conn.cursor() as cur:
        with cur.copy(copy_sql) as copy:
            for payload in payloads:
                copy.write_row(common.row_of(payload))
    conn.commit()


common.Run(args).run(write)
conn.close()
