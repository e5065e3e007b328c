-- Peer: the seed design's shape (bench.validate_seed_shape, see bench/sql/peer.sql).
\set i random(:first, :last)
SELECT * FROM bench.validate_seed_shape('ovt_prod_' || encode(sha256(convert_to('bench' || :i, 'UTF8')), 'hex'));
