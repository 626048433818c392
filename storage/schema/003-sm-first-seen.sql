-- 003-sm-first-seen.sql - the sm's first-seen mark on each account: set
-- (atomically, UPDATE ... WHERE sm_seen_at IS NULL) the first time an sm
-- instance loads the account, which then runs the user-create hook
-- (sm/sm.h): accounts are made by parleyctl in the database, unseen by the
-- sm, so this is how the sm learns that one is new. NULL: never seen.
-- Accounts that exist when this migration runs were used before the hook
-- existed: they are marked seen (at the migration's time), so nothing is
-- done again for them. A constant default, dropped at once, marks them
-- without rewriting the table (PostgreSQL 11+ keeps it in the catalog),
-- so the exclusive lock is held only for the catalog change, not for a
-- write of every row; accounts created afterwards start NULL.
SET LOCAL ROLE parley_admin;

ALTER TABLE users ADD COLUMN sm_seen_at timestamptz DEFAULT now();
ALTER TABLE users ALTER COLUMN sm_seen_at DROP DEFAULT;

-- The sm sets and takes back its mark, and nothing else of users.
GRANT UPDATE (sm_seen_at) ON users TO parley_sm;
