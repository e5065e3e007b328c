-- Live tokens expiring per day over the next 30 days, with and without a refresh path.
CREATE OR REPLACE VIEW auth.token_expiry_forecast AS
SELECT
    d.days_ahead,
    (now() + make_interval(days => d.days_ahead))::date AS day,  -- noqa: RF04
    count(t.api_token_hk) FILTER (WHERE t.has_refresh_path) AS with_refresh_path,
    count(t.api_token_hk) FILTER (WHERE NOT t.has_refresh_path) AS without_refresh_path
FROM generate_series(0, 29) AS d (days_ahead)
LEFT JOIN auth.token_refresh_path AS t
    ON
        t.expires_at >= now() + make_interval(days => d.days_ahead)
        AND t.expires_at < now() + make_interval(days => d.days_ahead + 1)
GROUP BY d.days_ahead;
COMMENT ON VIEW auth.token_expiry_forecast IS
'Tokens expiring in each of the next 30 days (days_ahead 0 = the next 24 hours), split '
'by whether they have a refresh path (see auth.token_refresh_path).';
REVOKE ALL ON auth.token_expiry_forecast FROM public;
GRANT SELECT ON auth.token_expiry_forecast TO pyvault_monitor;
