DROP TABLE auth.install_settings;
