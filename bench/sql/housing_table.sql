-- The seed's housing table (schemas/housing.yaml, as in sql/housing.sql without pipectl's
-- "_pipectl_record" column and its index), under the name given with `psql -v table=NAME`.
-- Used by the \copy reference and by both peers.
DROP TABLE IF EXISTS :"table";
CREATE TABLE :"table" (
    "id" serial PRIMARY KEY,
    "crim" double precision,
    "zn" double precision,
    "indus" double precision,
    "chas" integer,
    "nox" double precision,
    "rm" double precision,
    "age" double precision,
    "dis" double precision,
    "rad" integer,
    "tax" integer,
    "ptratio" double precision,
    "b" double precision,
    "lstat" double precision,
    "medv" double precision,
    "created_at" timestamp DEFAULT current_timestamp
);
