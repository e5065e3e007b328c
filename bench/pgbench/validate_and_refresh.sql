-- auth.validate_and_refresh_api_token on a random token of the range.
\set i random(:first, :last)
SELECT * FROM auth.validate_and_refresh_api_token((SELECT t.token FROM bench.token AS t WHERE t.i = :i));
