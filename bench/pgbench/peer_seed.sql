-- Peer: the seed design's shape (bench.validate_seed_shape, see bench/sql/peer.sql).
\set i random(:first, :last)
SELECT * FROM bench.validate_seed_shape((SELECT t.token FROM bench.token AS t WHERE t.i = :i));
