-- depends: 0013.drop-superseded-signatures
-- Three unique indexes that guard nothing the others do not, each paid on every issue
-- or rotation (about 80 bytes a token each, since random hash keys leave B-tree pages
-- 70% full, and one B-tree insert each):
-- - The hub's api_token_bk: api_token_hk is a hash of it and the primary key, so two
--   rows with one business key cannot both exist.
-- - The user link's link_user_token_hk: a hash of (user_hk, api_token_hk), and
--   api_token_hk alone is unique there (a token has one user), so the pair is too.
--   api_token_hk becomes the primary key; it is also the key pruning deletes by.
-- - The rotation link's link_token_rotation_hk: a hash of (predecessor_hk,
--   successor_hk), unique because predecessor_hk is (a token has one successor).
-- The link hash keys stay in their columns, as Data Vault loads them; only their
-- redundant indexes go.

-- A unique constraint's index cannot become a primary key's, so each link's key is built
-- anew, in one pass over the table while it is locked (about a second per million rows).

ALTER TABLE auth.api_token_h DROP CONSTRAINT api_token_h_api_token_bk_key;

ALTER TABLE auth.user_token_l
DROP CONSTRAINT user_token_l_pkey,
DROP CONSTRAINT user_token_l_api_token_hk_key,
ADD PRIMARY KEY (api_token_hk);

ALTER TABLE auth.token_rotation_l
DROP CONSTRAINT token_rotation_l_pkey,
DROP CONSTRAINT token_rotation_l_predecessor_hk_key,
ADD PRIMARY KEY (predecessor_hk);
