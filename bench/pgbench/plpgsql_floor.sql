-- PL/pgSQL floor: the LIMIT probe in a minimal SECURITY DEFINER function (bench/sql/plpgsql_floor.sql).
\set i random(:first, :last)
SELECT * FROM bench.validate_floor('ovt_prod_' || encode(sha256(convert_to('bench' || :i, 'UTF8')), 'hex'));
