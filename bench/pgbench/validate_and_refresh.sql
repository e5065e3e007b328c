-- auth.validate_and_refresh_api_token on a random token of the range.
\set i random(:first, :last)
SELECT * FROM auth.validate_and_refresh_api_token('ovt_prod_' || encode(sha256(convert_to('bench' || :i, 'UTF8')), 'hex'));
