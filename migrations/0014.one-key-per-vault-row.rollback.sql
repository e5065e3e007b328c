ALTER TABLE auth.token_rotation_l
DROP CONSTRAINT token_rotation_l_pkey,
ADD CONSTRAINT token_rotation_l_predecessor_hk_key UNIQUE (predecessor_hk),
ADD PRIMARY KEY (link_token_rotation_hk);

ALTER TABLE auth.user_token_l
DROP CONSTRAINT user_token_l_pkey,
ADD CONSTRAINT user_token_l_api_token_hk_key UNIQUE (api_token_hk),
ADD PRIMARY KEY (link_user_token_hk);

ALTER TABLE auth.api_token_h ADD CONSTRAINT api_token_h_api_token_bk_key UNIQUE (api_token_bk);
