-- depends: 0011.refresh-lock-wait
-- The role prefix this database was installed with (pyvault-tokens migrate
-- --role-prefix). Roles are cluster-wide: two databases of one cluster that both use
-- the default share pyvault_admin, so an admin of one is an admin of the other. A
-- database installed with its own prefix grants its functions and views to
-- <prefix>_api, <prefix>_admin, <prefix>_monitor and <prefix>_refresher instead.

CREATE TABLE auth.install_settings (
    id boolean PRIMARY KEY DEFAULT TRUE CHECK (id),
    role_prefix text NOT NULL DEFAULT 'pyvault' CHECK (role_prefix ~ '^[a-z][a-z0-9_]{0,39}$')
);
INSERT INTO auth.install_settings DEFAULT VALUES;
COMMENT ON TABLE auth.install_settings IS
'One row: the prefix of the group roles that hold this database''s grants (default pyvault).';
