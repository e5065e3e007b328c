-- Nothing to restore: the old forms are gone with the code that used them, and sql/
-- holds only the current ones.
DO $$ BEGIN NULL; END $$;
