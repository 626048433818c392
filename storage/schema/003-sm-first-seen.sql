-- 003-sm-first-seen.sql - the sm's first-seen mark on each account: set
-- (atomically, UPDATE ... WHERE sm_seen_at IS NULL) the first time an sm
-- instance loads the account, which then runs the user-create hook
-- (sm/sm.h): accounts are made by parleyctl in the database, unseen by the
-- sm, so this is how the sm learns that one is new. NULL: never seen.
-- Accounts that exist when this migration runs were used before the hook
-- existed: they are marked seen, so nothing is done again for them.
SET LOCAL ROLE parley_admin;

ALTER TABLE users ADD COLUMN sm_seen_at timestamptz;
UPDATE users SET sm_seen_at = created_at;

-- The sm sets and takes back its mark, and nothing else of users.
GRANT UPDATE (sm_seen_at) ON users TO parley_sm;
