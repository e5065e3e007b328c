-- Driver: what every other script pays to get its token, measured alone: the round trip
-- and the read of pre-made token :i by primary key (bench.token), with no probe.
\set i random(:first, :last)
SELECT (SELECT t.token FROM bench.token AS t WHERE t.i = :i);
