-- Floor: derive the token and return it. Every script pays this round trip and derivation.
\set i random(:first, :last)
SELECT 'ovt_prod_' || encode(sha256(convert_to('bench' || :i, 'UTF8')), 'hex');
