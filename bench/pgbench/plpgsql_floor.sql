-- PL/pgSQL floor: the LIMIT probe in a minimal SECURITY DEFINER function with the nine result columns of validate_and_refresh (bench/sql/plpgsql_floor.sql).
\set i random(:first, :last)
SELECT * FROM bench.validate_and_refresh_floor((SELECT t.token FROM bench.token AS t WHERE t.i = :i));
