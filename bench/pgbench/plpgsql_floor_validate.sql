-- PL/pgSQL floor with the six result columns of validate_production_api_token (bench/sql/plpgsql_floor.sql).
\set i random(:first, :last)
SELECT * FROM bench.validate_floor((SELECT t.token FROM bench.token AS t WHERE t.i = :i));
