-- depends: 0012.install-settings
-- Functions whose signature or result changed: CREATE OR REPLACE cannot change either,
-- so the old form is dropped here, once, and the files in sql/ (re-applied right after
-- the migrations) create the new one. A changed signature gets a migration like this,
-- never a DROP in sql/, whose files run on every migrate.
-- Between this migration's commit and the re-applied sql/ (one migrate call) a caller of
-- these functions would find them missing; migrate in a quiet moment.

DROP FUNCTION IF EXISTS auth.refresh_production_token_enhanced(text, integer, boolean);
DROP FUNCTION IF EXISTS auth._extend_tokens(bytea[], text, text);
DROP FUNCTION IF EXISTS auth._refresh_token(text, interval, boolean, text);
DROP FUNCTION IF EXISTS auth._record_token_use(bytea, bytea, bytea, text, bytea);
DROP FUNCTION IF EXISTS auth.set_refresh_policy(
    text, text, interval, interval, interval, interval, text, interval, boolean
);
