// The part of every generated Spark job that does not depend on the spec: a Python port of
// pipectl's RecordDecoder and ValueCaster (same checks, same canonical text, same dead-letter
// reasons) and the exactly-once sink (claim, stage over JDBC, one transaction on the driver).
// `SparkJob` puts the spec's settings in front of it. Change it together with the Swift
// runtime it mirrors: the Spark tests compare both engines value by value.

extension SparkJob {
    /// The Python text after the generated settings.
    static let runtime = #"""
        # ---------------------------------------------------------------------------------------------
        # Everything below is the same for every pipeline: the record decoder and value casts (a port of
        # pipectl's RecordDecoder and ValueCaster, with the same dead-letter reasons) and the exactly-once
        # sink (claim, stage, one transaction on the driver).
        # ---------------------------------------------------------------------------------------------


        def _env_or(name, default):
            value = os.environ.get(name)
            return value if value else default


        # ---- values: the checks and canonical text of pipectl's ValueCaster -------------------------

        class CastError(Exception):
            """Why a value could not become a column's type; the text goes into the dead-letter table."""


        def _show(v):
            """The value as quoted in a reason: at most 60 bytes, control characters escaped."""
            out = []
            for ch in v[:60].decode("utf-8", "replace"):
                o = ord(ch)
                if o == 0:
                    out.append("\\0")
                elif o == 9:
                    out.append("\\t")
                elif o == 10:
                    out.append("\\n")
                elif o == 13:
                    out.append("\\r")
                elif o < 0x20 or o == 0x7F:
                    out.append("\\x%02X" % o)
                else:
                    out.append(ch)
            text = "".join(out)
            return "'" + text + "\u2026'" if len(v) > 60 else "'" + text + "'"


        def _is_digit(b):
            return 48 <= b <= 57


        def _integer(v, lo, hi, name):
            i, negative = 0, False
            if v[:1] in (b"-", b"+"):
                negative = v[:1] == b"-"
                i = 1
            if i >= len(v):
                raise CastError("%s is not a valid %s" % (_show(v), name))
            acc = 0
            while i < len(v):
                b = v[i]
                if not _is_digit(b):
                    if b == 46 and all(c == 48 for c in v[i + 1:]):
                        break  # "296.0" is a whole number
                    raise CastError("%s is not a valid %s" % (_show(v), name))
                acc = acc * 10 + (b - 48)
                if acc > 2 ** 63:
                    raise CastError("%s is out of range for %s" % (_show(v), name))
                i += 1
            if not negative and acc == 2 ** 63:
                raise CastError("%s is out of range for %s" % (_show(v), name))
            value = -acc if negative else acc
            if value < lo or value > hi:
                raise CastError("%s is out of range for %s" % (_show(v), name))
            return str(value)


        def _scan_decimal(v):
            """`[+-]digits[.digits][e[+-]digits]`: (integer digits, fraction digits, exponent, has exponent) or None."""
            i, n = 0, len(v)
            if i < n and v[i] in (45, 43):
                i += 1
            start = i
            int_digits, frac_digits, leading = 0, 0, True
            while i < n and _is_digit(v[i]):
                if not (leading and v[i] == 48):
                    int_digits += 1
                    leading = False
                i += 1
            saw_int = i > start
            saw_frac = False
            if i < n and v[i] == 46:
                i += 1
                while i < n and _is_digit(v[i]):
                    frac_digits += 1
                    saw_frac = True
                    i += 1
            if not (saw_int or saw_frac):
                return None
            exponent, has_exponent = 0, False
            if i < n and v[i] | 0x20 == 101:
                has_exponent = True
                i += 1
                negative = False
                if i < n and v[i] in (45, 43):
                    negative = v[i] == 45
                    i += 1
                if i >= n:
                    return None
                while i < n and _is_digit(v[i]):
                    exponent = min(exponent * 10 + v[i] - 48, 100000)
                    i += 1
                if negative:
                    exponent = -exponent
            if i != n:
                return None
            return int_digits, frac_digits, exponent, has_exponent


        def _is_special_float(v):
            if not v:
                return False
            first = v[0]
            if first in (45, 43):
                if len(v) < 2:
                    return False
                first = v[1]
            if first | 0x20 not in (110, 105):
                return False
            text = v.decode("utf-8", "replace").lower()
            if text[:1] in ("+", "-"):
                text = text[1:]
            return text in ("nan", "infinity", "inf")


        def _is_zero(v):
            mantissa = True
            for b in v:
                if b | 0x20 == 101:
                    mantissa = False
                if mantissa and _is_digit(b) and b != 48:
                    return False
            return True


        def _float(v, single):
            name = "real" if single else "double precision"
            if len(v) >= 400:
                raise CastError("%s is not a valid %s" % (_show(v), name))
            if _is_special_float(v):
                return v.decode()
            d = _scan_decimal(v)
            if d is None:
                raise CastError("%s is not a valid %s" % (_show(v), name))
            int_digits, _, exponent, has_exponent = d
            if has_exponent or int_digits > 30 or abs(int_digits + exponent) > (30 if single else 300):
                f = float(v.decode())
                if single:
                    try:
                        f = struct.unpack("<f", struct.pack("<f", f))[0]
                    except OverflowError:
                        f = float("inf")
                if f in (float("inf"), float("-inf")) or (f == 0 and not _is_zero(v)):
                    raise CastError("%s is out of range for %s" % (_show(v), name))
            return v.decode()


        def _numeric(v, precision, scale):
            name = "numeric(%d,%d)" % (precision, scale) if precision is not None else "numeric"
            if _is_special_float(v):
                if precision is not None:
                    raise CastError("%s is not allowed in %s" % (_show(v), name))
                return v.decode()
            d = _scan_decimal(v) if len(v) < 1200 else None
            if d is None:
                raise CastError("%s is not a valid %s" % (_show(v), name))
            int_digits, _, exponent, _ = d
            if precision is not None and int_digits > 0 and int_digits + exponent > precision - scale:
                raise CastError("%s does not fit %s (at most %d digits before the point)" % (_show(v), name, precision - scale))
            return v.decode()


        _TRUE_WORDS = {"true", "t", "yes", "y", "on", "1"}
        _FALSE_WORDS = {"false", "f", "no", "n", "off", "0"}


        def _boolean(v):
            word = v.decode("utf-8", "replace").lower()
            if word in _TRUE_WORDS:
                return "t"
            if word in _FALSE_WORDS:
                return "f"
            raise CastError("%s is not a valid boolean" % _show(v))


        def _text(v, limit):
            if limit is not None:
                characters = sum(1 for b in v if b & 0xC0 != 0x80)
                if characters > limit:
                    raise CastError("a value of %d characters does not fit varchar(%d)" % (characters, limit))
            if 0 in v:
                raise CastError("text contains a NUL character, which PostgreSQL cannot store")
            return v.decode("utf-8", "surrogateescape")


        def _digits(v, i, count):
            if i < 0 or i + count > len(v):
                return None
            n = 0
            for k in range(i, i + count):
                if not _is_digit(v[k]):
                    return None
                n = n * 10 + v[k] - 48
            return n


        def _valid_date(y, m, d):
            if y < 1 or not 1 <= m <= 12 or d < 1:
                return False
            leap = (y % 4 == 0 and y % 100 != 0) or y % 400 == 0
            return d <= [31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][m - 1]


        def _scan_date(v, order):
            y = _digits(v, 0, 4)
            if y is not None and len(v) >= 10 and v[4] == v[7] and v[4] in (45, 47):
                m, d = _digits(v, 5, 2), _digits(v, 8, 2)
                if m is not None and d is not None:
                    return (y, m, d, 10) if _valid_date(y, m, d) else None
            if len(v) >= 10:
                a, b, y = _digits(v, 0, 2), _digits(v, 3, 2), _digits(v, 6, 4)
                if a is not None and b is not None and y is not None:
                    if v[2] == 47 and v[5] == 47:
                        if order == "mdy":
                            return (y, a, b, 10) if _valid_date(y, a, b) else None
                        if order == "dmy":
                            return (y, b, a, 10) if _valid_date(y, b, a) else None
                        return None
                    if v[2] == 46 and v[5] == 46:
                        return (y, b, a, 10) if _valid_date(y, b, a) else None
            return None


        def _iso_date(y, m, d):
            return "%d%d%02d-%02d-%02d" % (y // 1000 % 10, y // 100 % 10, y % 100, m, d)


        def _date(v, order):
            found = _scan_date(v, order)
            if found is None or found[3] != len(v):
                raise CastError("%s is not a valid date (expected YYYY-MM-DD)" % _show(v))
            return _iso_date(*found[:3])


        def _scan_timestamp(v, order):
            found = _scan_date(v, order)
            if found is None:
                return None
            i = found[3]
            if i >= len(v) or v[i] not in (84, 32):
                return None
            i += 1
            h, mi = _digits(v, i, 2), _digits(v, i + 3, 2)
            if h is None or i + 5 > len(v) or v[i + 2] != 58 or mi is None or h >= 24 or mi >= 60:
                return None
            end = i + 5
            if end < len(v) and v[end] == 58:
                sec = _digits(v, end + 1, 2)
                if sec is None or sec >= 61:
                    return None
                end += 3
                if end < len(v) and v[end] == 46:
                    k = end + 1
                    while k < len(v) and _is_digit(v[k]):
                        k += 1
                    if k == end + 1:
                        return None
                    end = k
            time = v[i:end].decode()
            zone = ""
            if end < len(v):
                z = v[end:]
                if z == b"Z":
                    zone = "+00"
                elif z[:1] in (b"+", b"-") and _digits(v, end + 1, 2) is not None and (
                        len(z) == 3 or (len(z) == 6 and v[end + 3] == 58 and _digits(v, end + 4, 2) is not None)
                        or (len(z) == 5 and _digits(v, end + 3, 2) is not None)):
                    zone = z.decode()
                else:
                    return None
            return found[:3], time, zone


        def _timestamp(v, zoned, order):
            name = "timestamptz" if zoned else "timestamp"
            found = _scan_timestamp(v, order)
            if found is not None:
                date, time, zone = found
                return _iso_date(*date) + " " + time + (zone if zoned else "")
            found = _scan_date(v, order)
            if found is not None and found[3] == len(v):  # a date alone is midnight
                return _iso_date(*found[:3]) + " 00:00:00"
            raise CastError("%s is not a valid %s (expected YYYY-MM-DD HH:MM:SS)" % (_show(v), name))


        _TEXT_FAMILIES = ("text", "varchar", "json", "jsonb")


        def cast_value(v, sql_type, order="mdy"):
            """Checks the bytes `v` as `sql_type` (a tuple like ("numeric", 10, 2)) and returns the text
            PostgreSQL reads back as the same value; raises CastError with pipectl's reason."""
            kind = sql_type[0]
            if kind not in _TEXT_FAMILIES:
                # Surrounding blanks are not part of a number or date.
                start, end = 0, len(v)
                while start < end and v[start] in (32, 9):
                    start += 1
                while end > start and v[end - 1] in (32, 9):
                    end -= 1
                v = v[start:end]
            if kind == "smallint":
                return _integer(v, -2 ** 15, 2 ** 15 - 1, "smallint")
            if kind in ("integer", "serial"):
                return _integer(v, -2 ** 31, 2 ** 31 - 1, "integer")
            if kind in ("bigint", "bigserial"):
                return _integer(v, -2 ** 63, 2 ** 63 - 1, "bigint")
            if kind == "real":
                return _float(v, True)
            if kind == "double precision":
                return _float(v, False)
            if kind == "numeric":
                return _numeric(v, sql_type[1], sql_type[2] or 0)
            if kind == "boolean":
                return _boolean(v)
            if kind == "varchar":
                return _text(v, sql_type[1])
            if kind == "date":
                return _date(v, order)
            if kind == "timestamp":
                return _timestamp(v, False, order)
            if kind == "timestamptz":
                return _timestamp(v, True, order)
            return _text(v, None)  # text, json, jsonb


        def type_name(sql_type):
            """The SQL spelling, as in pipectl's DDL and reasons: `numeric(10,2)`, `varchar(32)`."""
            kind = sql_type[0]
            args = [str(a) for a in sql_type[1:] if a is not None]
            return kind + ("(" + ",".join(args) + ")" if args else "")


        # ---- records: the transform of pipectl's RecordDecoder --------------------------------------

        class _Number(str):
            """A JSON number, kept as written (null_if applies to strings only)."""


        class _Raw(str):
            """A JSON array or object kept as JSON text."""


        class _Bool(str):
            """A JSON true or false, as that word."""


        def _reject_constant(name):
            raise ValueError("invalid literal %s" % name)


        class _Object(list):
            """A JSON object as its (key, value) pairs, in order."""


        def _flatten(obj, separator, prefix, out):
            for key, value in obj:
                name = prefix + key
                if separator is not None and isinstance(value, _Object):
                    _flatten(value, separator, name + separator, out)
                else:
                    out.append((name, value))


        def _to_raw(value):
            """JSON text of an array or object, numbers as written."""
            if isinstance(value, _Object):
                return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + _to_raw(v) for k, v in value) + "}"
            if isinstance(value, list):
                return "[" + ",".join(_to_raw(v) for v in value) + "]"
            if isinstance(value, _Number):
                return str(value)
            return json.dumps(value, ensure_ascii=False)


        def parse_message(value):
            """The message's fields after flattening, in order: [(key, value)] where a value is None
            (JSON null), str (a string), _Number, _Bool or _Raw."""
            obj = json.loads(value.decode("utf-8"), object_pairs_hook=_Object, parse_float=_Number,
                             parse_int=_Number, parse_constant=_reject_constant)
            if not isinstance(obj, _Object):
                raise ValueError("a message must be a JSON object")
            fields = []
            _flatten(obj, FLATTEN, "", fields)
            out = []
            for key, v in fields:
                if isinstance(v, bool):
                    v = _Bool("true" if v else "false")
                elif isinstance(v, (list, _Object)):
                    v = _Raw(_to_raw(v))
                out.append((key, v))
            return out


        def normalized(name):
            """pipectl's normalised field name (`Order Date` -> `order_date`): lower case, every run of
            characters other than ASCII letters and digits as one `_`, trimmed, a leading digit
            prefixed with `_`."""
            out = ""
            for ch in name.lower():
                if ch.isascii() and ch.isalnum():
                    out += ch
                elif not out.endswith("_"):
                    out += "_"
            while out.endswith("_") and len(out) > 1:
                out = out[:-1]
            while out.startswith("_") and len(out) > 1:
                out = out[1:]
            if out in ("", "_"):
                out = "column_1"
            if out[0].isdigit():
                out = "_" + out
            return out.encode()[:60].decode("utf-8", "ignore")


        def _record_id(text):
            """`"<fingerprint>:<ordinal>"` -> (fingerprint, ordinal), or (None, None). The fingerprint is
            an opaque string: everything before the last colon."""
            if not isinstance(text, str):
                return None, None
            colon = text.rfind(":")
            digits = text[colon + 1:] if colon >= 0 else ""
            if colon < 0 or not digits or not all("0" <= c <= "9" for c in digits):
                return None, None
            ordinal = int(digits)
            if ordinal >= 1 << 40:
                return None, None
            return text[:colon], ordinal


        def _null_or_default(column, why):
            if column["default"] is not None:
                try:
                    return cast_value(column["default"].encode(), column["type"], column["date_order"])
                except CastError as e:
                    raise CastError("default for '%s': %s" % (column["name"], e))
            if not column["nullable"]:
                raise CastError("column '%s' is not nullable and field '%s' %s" % (column["name"], column["field"], why))
            return None


        def _column_value(column, fields, first):
            key = column["key"]
            found = key is not None and key in first
            value = fields[first[key]][1] if found else None
            if not found and key is not None and not column["resolved"]:
                for raw, v in fields:
                    if normalized(raw) == key and raw not in DROPS:
                        found, value = True, v
                        break
            is_null = value is None
            if not is_null and NULL_IF and type(value) is str and value in NULL_IF:
                is_null = True
            family = column["type"][0]
            if not is_null and isinstance(value, _Raw) and family not in _TEXT_FAMILIES:
                raise CastError("field '%s' holds a JSON %s, not a %s" % (
                    column["field"], "array" if value.startswith("[") else "object", type_name(column["type"])))
            if is_null:
                return _null_or_default(column, "is null" if found else "is missing")
            raw = value.encode("utf-8", "surrogatepass")
            try:
                cast = column["cast"]
                if cast is not None and cast != column["type"]:
                    raw = cast_value(raw, cast, column["date_order"]).encode("utf-8", "surrogateescape")
                    return cast_value(raw, column["type"])
                return cast_value(raw, column["type"], column["date_order"])
            except CastError as e:
                if column["on_error"] == "null":
                    return None
                if column["on_error"] == "default":
                    return _null_or_default(column, "could not be cast")
                raise CastError("column '%s': %s" % (column["name"], e))


        def decode(value, parsed=None):
            """One message -> (fingerprint, ordinal, stage, reason, payload, values): stage and reason
            are None for a row; values are the columns' canonical text (None for NULL)."""
            payload = bytes(value) if value is not None else b""
            try:
                if parsed is not None:
                    # from_json's struct: CSV-fed messages hold strings and nulls only.
                    if parsed.get("_pipectl_corrupt") is not None:
                        parse_message(payload)  # raises with the parser's reason
                    fields = [(k, v) for k, v in parsed.items() if k != "_pipectl_corrupt"]
                else:
                    fields = parse_message(payload)
            except Exception as e:  # noqa: BLE001 - any parse failure is a dead letter, not a failed batch
                return None, None, "parse", str(e) or "not a JSON object", payload, [None] * len(COLUMNS)
            first = {}
            for i, (k, _) in enumerate(fields):
                first.setdefault(k, i)
            fingerprint, ordinal = _record_id(fields[first["_record"]][1]) if "_record" in first else (None, None)
            if "_error" in first and fields[first["_error"]][1] is not None:
                raw = payload
                if "_raw_b64" in first and fields[first["_raw_b64"]][1] is not None:
                    try:
                        raw = base64.b64decode(fields[first["_raw_b64"]][1], validate=True)
                    except Exception:  # noqa: BLE001 - keep the message itself
                        raw = payload
                return fingerprint, ordinal, "source", str(fields[first["_error"]][1]), raw, [None] * len(COLUMNS)
            values = []
            for column in COLUMNS:
                try:
                    values.append(_column_value(column, fields, first))
                except CastError as e:
                    return fingerprint, ordinal, "cast", str(e), payload, [None] * len(COLUMNS)
            return fingerprint, ordinal, None, None, None, values


        # ---- PostgreSQL ------------------------------------------------------------------------------

        def _q(identifier):
            return '"' + identifier.replace('"', '""') + '"'


        def _qualified(schema, table):
            return _q(schema) + "." + _q(table)


        TARGET = _qualified(DB_SCHEMA, TABLE)
        OFFSETS_TABLE = _qualified("pipectl", PIPELINE + "__offsets")
        SOURCES_TABLE = _qualified("pipectl", PIPELINE + "__sources")
        DEAD_LETTER_TABLE = _qualified("pipectl", PIPELINE + "__dead_letters")
        STAGING = _qualified("pipectl", STAGING_TABLE)
        STAGING_DDL = ("CREATE UNLOGGED TABLE IF NOT EXISTS " + STAGING + " (\n"
                       '    "_pipectl_attempt" text NOT NULL,\n'
                       '    "_pipectl_partition" integer NOT NULL,\n'
                       '    "_pipectl_offset" bigint NOT NULL,\n'
                       '    "_pipectl_fingerprint" text,\n'
                       '    "_pipectl_ordinal" bigint,\n'
                       '    "_pipectl_stage" text,\n'
                       '    "_pipectl_reason" text,\n'
                       '    "_pipectl_payload" bytea'
                       + "".join(",\n    %s text" % _q("c%d" % (i + 1)) for i in range(len(COLUMNS))) + "\n);")


        def jdbc_settings(url):
            """A libpq URL (`postgresql://user:pass@host:port/db?sslmode=require`) as Spark's JDBC
            options; the password stays out of the URL."""
            parts = urlsplit(url)
            host = parts.hostname or "localhost"
            if ":" in host:
                host = "[" + host + "]"
            query = dict(parse_qsl(parts.query))
            user = unquote(parts.username) if parts.username else query.pop("user", os.environ.get("PGUSER", ""))
            password = unquote(parts.password) if parts.password else query.pop("password", os.environ.get("PGPASSWORD", ""))
            jdbc = "jdbc:postgresql://%s:%d/%s" % (host, parts.port or 5432, unquote(parts.path.lstrip("/")) or user)
            if query:
                jdbc += "?" + "&".join("%s=%s" % kv for kv in sorted(query.items()))
            options = {"url": jdbc, "driver": "org.postgresql.Driver", "user": user}
            if password:
                options["password"] = password
            return options


        def connect(url):
            import psycopg
            conn = psycopg.connect(url, autocommit=True)
            # Like pipectl's sink: a driver frozen inside the transaction must not hold the offsets rows.
            conn.execute("SET idle_in_transaction_session_timeout = '5s'; SET statement_timeout = '120s'")
            return conn


        def apply_ddl(conn):
            """The DDL of `pipectl plan` (bookkeeping tables, the sink's table and indexes), then the
            staging table, serialised with pipectl's own DDL lock."""
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext('pipectl ddl'))")
                for statement in DDL + [STAGING_DDL]:
                    conn.execute(statement)


        class Fenced(Exception):
            """Another consumer (pipectl or another Spark job) claimed a partition of this sink."""


        class TopicIncarnation(Exception):
            """The stored offsets belong to an earlier incarnation of the topic."""


        def topic_layout(brokers, kafka_options):
            """The topic's partitions and its ID (which changes when the topic is created again)."""
            from confluent_kafka import TopicCollection
            from confluent_kafka.admin import AdminClient
            settings = {"bootstrap.servers": brokers}
            settings.update({k: v for k, v in kafka_options.items() if not k.startswith("producer.")})
            admin = AdminClient(settings)
            description = admin.describe_topics(TopicCollection([TOPIC]), request_timeout=15)[TOPIC].result()
            return sorted(p.id for p in description.partitions), str(description.topic_id)


        def claim(conn, partitions, topic_id, owner, restart_on_new_topic):
            """Claims every partition for this job with a fresh owner token, as pipectl's consumer does
            on assignment, and returns where each starts (missing: from the beginning)."""
            starts = {}
            with conn.transaction():
                conn.execute("SET LOCAL synchronous_commit = on")
                for p in partitions:
                    stored_id, nxt = conn.execute(
                        "INSERT INTO " + OFFSETS_TABLE + ' ("sink", "topic", "partition", "topic_id", "next_offset", "owner") '
                        "VALUES (%s, %s, %s, %s, -1, %s) "
                        'ON CONFLICT ("sink", "topic", "partition") DO UPDATE SET "owner" = EXCLUDED."owner" '
                        'RETURNING "topic_id", "next_offset"', (SINK, TOPIC, p, topic_id, owner)).fetchone()
                    if stored_id != topic_id:
                        stale = ("stored offsets of topic '%s' partition %d belong to topic ID %s, but the topic now has ID %s: "
                                 "it was deleted and created again (a broker restart loses in-memory topics)" % (TOPIC, p, stored_id, topic_id))
                        if not restart_on_new_topic:
                            raise TopicIncarnation(stale + ". Nothing was skipped. Re-send the data and start the job with "
                                                   "--restart-on-new-topic; record ids keep rows from loading twice.")
                        conn.execute("UPDATE " + OFFSETS_TABLE + ' SET "topic_id" = %s, "next_offset" = -1 '
                                     'WHERE "sink" = %s AND "topic" = %s AND "partition" = %s', (topic_id, SINK, TOPIC, p))
                        continue
                    if nxt >= 0:
                        starts[p] = nxt
                # Rows staged by an earlier run that stopped before its commit: this job owns them now.
                conn.execute("DELETE FROM " + STAGING)
            return starts


        def _casted(column, i):
            return "s.%s::%s" % (_q("c%d" % (i + 1)), type_name(column["type"]))


        def _batch_rows_sql(where):
            """The staged rows of one attempt that are past the committed offsets, cast to the table's types."""
            return ("SELECT s.\"_pipectl_partition\" AS \"p\", s.\"_pipectl_offset\" AS \"o\", "
                    + "".join("%s AS %s, " % (_casted(c, i), _q("c%d" % (i + 1))) for i, c in enumerate(COLUMNS))
                    + "(src.\"source_id\"::bigint << 40) | s.\"_pipectl_ordinal\" AS \"r\" "
                    "FROM " + STAGING + " s "
                    "JOIN " + OFFSETS_TABLE + " o ON o.\"sink\" = %(sink)s AND o.\"topic\" = %(topic)s AND o.\"partition\" = s.\"_pipectl_partition\" "
                    "LEFT JOIN " + SOURCES_TABLE + " src ON src.\"fingerprint\" = s.\"_pipectl_fingerprint\" "
                    "WHERE s.\"_pipectl_attempt\" = %(attempt)s AND s.\"_pipectl_reason\" IS NULL "
                    "AND s.\"_pipectl_offset\" >= o.\"next_offset\"" + where)


        def _insert_sql(where=""):
            columns = ", ".join(_q(c["name"]) for c in COLUMNS) + ", " + _q(RECORD_COLUMN)
            values = ", ".join(_q("c%d" % (i + 1)) for i in range(len(COLUMNS))) + ", \"r\""
            batch = "WITH b AS (" + _batch_rows_sql(where) + ") "
            if MODE == "upsert":
                keys = [i for i, c in enumerate(COLUMNS) if c["name"] in UPSERT_KEY]
                key_list = ", ".join(_q("c%d" % (i + 1)) for i in keys)
                updates = ", ".join("%s = EXCLUDED.%s" % (_q(n), _q(n)) for n in [c["name"] for c in COLUMNS] + [RECORD_COLUMN]
                                    if n not in UPSERT_KEY)
                # Several versions of one key in a batch: the last one (highest offset) wins.
                return (batch + "INSERT INTO " + TARGET + " (" + columns + ") SELECT " + values + " FROM ("
                        "SELECT DISTINCT ON (" + key_list + ") * FROM b ORDER BY " + key_list + ", \"p\" DESC, \"o\" DESC) v "
                        "ON CONFLICT (" + ", ".join(_q(k) for k in UPSERT_KEY) + ") DO UPDATE SET " + updates
                        + " RETURNING (\"xmax\" = 0)")
            return (batch + "INSERT INTO " + TARGET + " (" + columns + ") SELECT " + values + " FROM b ORDER BY \"p\", \"o\" "
                    "ON CONFLICT (" + _q(RECORD_COLUMN) + ") DO NOTHING RETURNING true")


        def _postgres_reason(error):
            diag = getattr(error, "diag", None)
            text = (diag.message_primary if diag is not None and diag.message_primary else str(error)).strip()
            if diag is not None and diag.message_detail:
                text += " (" + diag.message_detail + ")"
            return "PostgreSQL refused the row: " + text


        def commit(conn, attempt, owner, topic_id, crash_point=None):
            """Stores one staged batch attempt in one transaction: the rows past the committed offsets
            (and not already loaded by record id), the dead letters, the next offsets; clears the
            staging rows. Returns (loaded, skipped, dead-lettered)."""
            import psycopg
            params = {"sink": SINK, "topic": TOPIC, "attempt": attempt}
            with conn.transaction():
                parts = [r[0] for r in conn.execute(
                    "SELECT DISTINCT \"_pipectl_partition\" FROM " + STAGING + " WHERE \"_pipectl_attempt\" = %(attempt)s ORDER BY 1",
                    params).fetchall()]
                if not parts:
                    return 0, 0, 0
                # Partitions the topic gained while running are claimed on first sight.
                for p in parts:
                    conn.execute("INSERT INTO " + OFFSETS_TABLE + ' ("sink", "topic", "partition", "topic_id", "next_offset", "owner") '
                                 'VALUES (%s, %s, %s, %s, -1, %s) ON CONFLICT DO NOTHING', (SINK, TOPIC, p, topic_id, owner))
                owners = dict(conn.execute(
                    'SELECT "partition", "owner" FROM ' + OFFSETS_TABLE + ' WHERE "sink" = %s AND "topic" = %s '
                    'AND "partition" = ANY(%s) ORDER BY "partition" FOR UPDATE', (SINK, TOPIC, parts)).fetchall())
                lost = [p for p in parts if owners.get(p) != owner]
                if lost:
                    raise Fenced("partitions %s now belong to another consumer; batch dropped" % ", ".join(map(str, lost)))
                conn.execute(
                    "INSERT INTO " + SOURCES_TABLE + ' ("fingerprint", "source", "path") '
                    'SELECT DISTINCT "_pipectl_fingerprint", %(source)s, %(path)s FROM ' + STAGING
                    + ' WHERE "_pipectl_attempt" = %(attempt)s AND "_pipectl_reason" IS NULL AND "_pipectl_fingerprint" IS NOT NULL '
                    'ORDER BY 1 ON CONFLICT ("fingerprint") DO UPDATE SET "fingerprint" = EXCLUDED."fingerprint"',
                    dict(params, source=SOURCE_NAME, path=SOURCE_PATH))
                dead = []
                try:
                    with conn.transaction():
                        stored = conn.execute(_insert_sql(), params).fetchall()
                except (psycopg.errors.IntegrityError, psycopg.errors.DataError):
                    # A row PostgreSQL refuses (a constraint, a bad json value) becomes a dead letter;
                    # the rest of the batch loads. Row by row, as rare as the failure.
                    stored = []
                    todo = conn.execute(
                        'SELECT s."_pipectl_partition", s."_pipectl_offset" FROM ' + STAGING + " s "
                        "JOIN " + OFFSETS_TABLE + ' o ON o."sink" = %(sink)s AND o."topic" = %(topic)s AND o."partition" = s."_pipectl_partition" '
                        'WHERE s."_pipectl_attempt" = %(attempt)s AND s."_pipectl_reason" IS NULL AND s."_pipectl_offset" >= o."next_offset" '
                        "ORDER BY 1, 2", params).fetchall()
                    for p, o in todo:
                        try:
                            with conn.transaction():
                                stored += conn.execute(_insert_sql(' AND s."_pipectl_partition" = %(p)s AND s."_pipectl_offset" = %(o)s'),
                                                       dict(params, p=p, o=o)).fetchall()
                        except (psycopg.errors.IntegrityError, psycopg.errors.DataError) as e:
                            dead.append((p, o, _postgres_reason(e)))
                for p, o, reason in dead:
                    conn.execute(
                        'UPDATE ' + STAGING + ' SET "_pipectl_stage" = %s, "_pipectl_reason" = %s WHERE "_pipectl_attempt" = %s '
                        'AND "_pipectl_partition" = %s AND "_pipectl_offset" = %s', ("constraint", reason, attempt, p, o))
                dead_lettered = conn.execute(
                    "INSERT INTO " + DEAD_LETTER_TABLE + ' ("stage", "sink", "topic", "partition", "offset", "source_fingerprint", '
                    '"source_ordinal", "payload", "reason") '
                    'SELECT s."_pipectl_stage", %(sink)s, %(topic)s, s."_pipectl_partition", s."_pipectl_offset", s."_pipectl_fingerprint", '
                    's."_pipectl_ordinal", s."_pipectl_payload", s."_pipectl_reason" FROM ' + STAGING + " s "
                    "JOIN " + OFFSETS_TABLE + ' o ON o."sink" = %(sink)s AND o."topic" = %(topic)s AND o."partition" = s."_pipectl_partition" '
                    'WHERE s."_pipectl_attempt" = %(attempt)s AND s."_pipectl_reason" IS NOT NULL AND s."_pipectl_offset" >= o."next_offset" '
                    'ORDER BY s."_pipectl_partition", s."_pipectl_offset" '
                    'ON CONFLICT ("sink", "source_fingerprint", "source_ordinal") DO NOTHING', params).rowcount
                staged = conn.execute("SELECT count(*) FROM " + STAGING + ' WHERE "_pipectl_attempt" = %(attempt)s', params).fetchone()[0]
                conn.execute(
                    "UPDATE " + OFFSETS_TABLE + ' o SET "next_offset" = GREATEST(o."next_offset", n."next"), "updated_at" = now() '
                    'FROM (SELECT "_pipectl_partition" AS "part", max("_pipectl_offset") + 1 AS "next" FROM ' + STAGING
                    + ' WHERE "_pipectl_attempt" = %(attempt)s GROUP BY 1) n '
                    'WHERE o."sink" = %(sink)s AND o."topic" = %(topic)s AND o."partition" = n."part"', params)
                conn.execute("DELETE FROM " + STAGING + ' WHERE "_pipectl_attempt" = %(attempt)s', params)
                if crash_point == "before-commit":
                    os._exit(137)
            loaded = sum(1 for r in stored if r[0])
            return loaded, staged - loaded - dead_lettered, dead_lettered


        # ---- the streaming job -----------------------------------------------------------------------

        def source_format(spark):
            """`kafka`: Spark's Kafka source. PIPECTL_SPARK_SOURCE=module:Class registers a Python data
            source with the same options and columns instead (how pipectl's tests run this job without
            the Kafka jar); nothing else differs."""
            chosen = os.environ.get("PIPECTL_SPARK_SOURCE")
            if not chosen:
                return "kafka"
            import importlib
            module, _, name = chosen.partition(":")
            source = getattr(importlib.import_module(module), name)
            spark.dataSource.register(source)
            return source.name()


        def decoded_schema():
            from pyspark.sql.types import BinaryType, LongType, StringType, StructField, StructType
            return StructType([
                StructField("_pipectl_fingerprint", StringType()), StructField("_pipectl_ordinal", LongType()),
                StructField("_pipectl_stage", StringType()), StructField("_pipectl_reason", StringType()),
                StructField("_pipectl_payload", BinaryType()),
            ] + [StructField("c%d" % (i + 1), StringType()) for i in range(len(COLUMNS))])


        def message_schema():
            """The fields as they arrive on the topic (from_json's schema), or None when the transform
            needs every key of a message (flattening, or fields matched by their normalised names)."""
            if not FROM_JSON_FIELDS:
                return None
            from pyspark.sql.types import StringType, StructField, StructType
            return StructType([StructField(name, StringType()) for name in FROM_JSON_FIELDS + ["_pipectl_corrupt"]])


        def transform(batch):
            """Kafka rows -> staging rows: the record id, the dead-letter stage and reason, and each
            column's checked text."""
            from pyspark.sql import functions as F
            schema = message_schema()
            decode_udf = F.udf(lambda value, parsed: _as_row(decode(value, parsed.asDict() if parsed is not None else None)),
                               decoded_schema())
            parsed = (F.from_json(F.col("value").cast("string"), schema, {"columnNameOfCorruptRecord": "_pipectl_corrupt"})
                      if schema is not None else F.lit(None))
            return batch.select(F.col("partition").alias("_pipectl_partition"), F.col("offset").alias("_pipectl_offset"),
                                decode_udf(F.col("value"), parsed).alias("d")).select(
                "_pipectl_partition", "_pipectl_offset", "d.*")


        def _as_row(decoded):
            fingerprint, ordinal, stage, reason, payload, values = decoded
            return (fingerprint, ordinal, stage, reason, payload, *values)


        # How the summary names rows: an upsert updates stored rows where an insert skips them.
        WORDS = ("inserted", "updated") if MODE == "upsert" else ("loaded", "already loaded")


        def main(argv=None):
            import argparse
            parser = argparse.ArgumentParser(description="Load topic %r into %s exactly once (pipectl sink %r)." % (TOPIC, TARGET, SINK))
            parser.add_argument("--available-now", action="store_true",
                                help="load what the topic holds now, then stop (like `pipectl consume --idle-exit`)")
            parser.add_argument("--restart-on-new-topic", action="store_true",
                                help="start a re-created topic from its beginning (record ids keep rows from loading twice)")
            parser.add_argument("--checkpoint", default=None,
                                help="Spark's checkpoint folder (default: a fresh temporary one; the offsets table is the state that counts)")
            args = parser.parse_args(argv)

            from pyspark.sql import SparkSession
            url = _env_or("DATABASE_URL", DATABASE_URL)
            brokers = _env_or("KAFKA_BROKERS", BROKERS)
            kafka_options = dict(KAFKA_OPTIONS)
            for key, variable in KAFKA_SECRET_OPTIONS.items():
                if variable not in os.environ:
                    sys.exit("environment variable %s (for Kafka property %s) is not set" % (variable, key))
                kafka_options[key] = os.environ[variable]
            spark = SparkSession.builder.appName("pipectl %s %s" % (PIPELINE, SINK)).getOrCreate()
            conn = connect(url)
            apply_ddl(conn)
            owner = str(uuid.uuid4())
            partitions, topic_id = topic_layout(brokers, kafka_options)
            starts = claim(conn, partitions, topic_id, owner, args.restart_on_new_topic)
            # Spark's Kafka source wants every partition: -2 is "from the beginning".
            starting = json.dumps({TOPIC: {str(p): starts.get(p, -2) for p in partitions}}, sort_keys=True)
            jdbc = jdbc_settings(url)
            # Test-only crash points, like pipectl's PIPECTL_CRASH_AT: "after-stage:N", "before-commit:N"
            # or "after-commit:N" ends the process at that moment of the Nth batch; "pause-before-commit:N"
            # holds it there.
            crash = os.environ.get("PIPECTL_SPARK_CRASH", "")
            totals = {"batches": 0, "loaded": 0, "skipped": 0, "dead": 0}

            def store(batch, batch_id):
                staged = transform(batch)
                attempt = "%s/%d" % (owner, batch_id)
                staged = staged.selectExpr("'%s' AS _pipectl_attempt" % attempt, "*")
                writer = staged.write.format("jdbc").mode("append").option("dbtable", STAGING)
                for k, v in jdbc.items():
                    writer = writer.option(k, v)
                writer.save()
                totals["batches"] += 1
                point, _, n = crash.partition(":")
                here = n == str(totals["batches"])
                if here and point == "after-stage":
                    os._exit(137)
                if here and point == "pause-before-commit":
                    # Tests: hold the staged batch until the file PIPECTL_SPARK_RESUME names exists.
                    resume = os.environ["PIPECTL_SPARK_RESUME"]
                    open(resume + ".paused", "w").close()
                    while not os.path.exists(resume):
                        time.sleep(0.1)
                loaded, skipped, dead = commit(conn, attempt, owner, topic_id, point if here else None)
                if here and point == "after-commit":
                    os._exit(137)
                totals["loaded"] += loaded
                totals["skipped"] += skipped
                totals["dead"] += dead
                print("pipectl-spark: batch %d: %d %s, %d %s, %d dead-lettered" % (batch_id, loaded, WORDS[0], skipped, WORDS[1], dead),
                      flush=True)

            reader = spark.readStream.format(source_format(spark))
            for key, value in sorted(kafka_options.items()):
                if not key.startswith("producer."):
                    reader = reader.option("kafka." + (key[len("consumer."):] if key.startswith("consumer.") else key), value)
            stream = (reader.option("kafka.bootstrap.servers", brokers)
                      .option("subscribe", TOPIC)
                      .option("startingOffsets", starting)
                      .option("maxOffsetsPerTrigger", str(MAX_OFFSETS_PER_TRIGGER))
                      .option("failOnDataLoss", "true")
                      .load())
            # Spark's checkpoint only says where this run is; where the load stands is the offsets
            # table, so by default each run starts from it with a fresh checkpoint.
            checkpoint = args.checkpoint or tempfile.mkdtemp(prefix="pipectl-spark-%s-" % SINK)
            query = stream.writeStream.foreachBatch(store).option("checkpointLocation", checkpoint)
            query = query.trigger(availableNow=True) if args.available_now else query.trigger(processingTime="%d milliseconds" % MAX_DELAY_MS)
            try:
                query.start().awaitTermination()
            finally:
                if args.checkpoint is None:
                    shutil.rmtree(checkpoint, ignore_errors=True)
            print("pipectl-spark: done: %d batches, %d %s, %d %s, %d dead-lettered"
                  % (totals["batches"], totals["loaded"], WORDS[0], totals["skipped"], WORDS[1], totals["dead"]), flush=True)
            spark.stop()


        if __name__ == "__main__":
            main()
        """#
}
