-- PL/pgSQL floor: the LIMIT probe in a minimal SECURITY DEFINER function (bench/sql/plpgsql_floor.sql).
\set i random(:first, :last)
SELECT * FROM bench.validate_floor((SELECT t.token FROM bench.token AS t WHERE t.i = :i));
