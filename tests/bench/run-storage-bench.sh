#!/bin/sh
# tests/bench/run-storage-bench.sh - queries/s through storage/.
#
# Builds (if needed) a release tree in build/rel (no sanitizers, -O2),
# starts a throwaway PostgreSQL cluster in a temporary directory (like
# tests/integration/pg.py: newest /usr/lib/postgresql/*/bin, scram-sha-256,
# Unix socket only, fsync off; as root it runs as the user parley-test-pg),
# applies the schema, fills USERS users with ITEMS roster items each (one
# group per item) and 3 offline messages each, and runs bench_storage for roster-get and offline-store,
# pipeline on and off. Prints one line per run; see
# tests/bench/README-storage.md.
#
# Environment: SECONDS_PER_RUN (default 5), USERS (1000), ITEMS (5),
# POOL (2), WINDOWS (default "256"; the pipeline-off runs use 2 x POOL:
# more would only queue), BUILD (build/rel).
set -eu

top=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD:-$top/build/rel}
seconds=${SECONDS_PER_RUN:-5}
users=${USERS:-1000}
items=${ITEMS:-5}
pool=${POOL:-2}
windows=${WINDOWS:-256}

if [ ! -f "$build/Makefile" ]; then
    mkdir -p "$build"
    [ -x "$top/configure" ] || (cd "$top" && autoreconf -fi >/dev/null)
    (cd "$build" && "$top/configure" -q CFLAGS="-O2 -g")
fi
if grep -q '^PARLEY_CFLAGS.*-fsanitize' "$build/Makefile"; then
    echo "run-storage-bench: $build is a sanitizer build; use a release build" >&2
    exit 1
fi
make -s -C "$build" -j"$(nproc)" tests/bench/bench_storage tests/integration/storage_migrate \
    >/dev/null

pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -t/ -k5 -n | tail -1)
run=
if [ "$(id -u)" -eq 0 ]; then
    id parley-test-pg >/dev/null 2>&1 ||
        useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
            parley-test-pg
    run="runuser -u parley-test-pg --"
fi

dir=$(mktemp -d /tmp/parley-bench-pg.XXXXXX)
chmod 755 "$dir"
started=
cleanup() {
    if [ -n "$started" ]; then
        $run "$pgbin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
    fi
    rm -rf "$dir"
}
trap cleanup EXIT INT TERM

pw=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
smpw=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
mkdir "$dir/run"
printf '%s\n' "$pw" >"$dir/pwfile"
chmod 600 "$dir/pwfile"
[ -z "$run" ] || chown -R parley-test-pg "$dir"
$run "$pgbin/initdb" -D "$dir/data" -U postgres -A scram-sha-256 --pwfile "$dir/pwfile" \
    -E UTF8 --locale C.UTF-8 --no-sync >/dev/null
rm -f "$dir/pwfile"
cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$dir/run'
port = 5432
fsync = off
full_page_writes = off
CONF
$run "$pgbin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w start >/dev/null
started=1

su="host=$dir/run dbname=parley user=postgres password=$pw"
sm="host=$dir/run dbname=parley user=parley_sm password=$smpw"
psql -X -q -d "host=$dir/run dbname=postgres user=postgres password=$pw" \
    -c "CREATE DATABASE parley"
"$build/tests/integration/storage_migrate" "$su" migrate "$top/storage/schema" >/dev/null
psql -X -q -v ON_ERROR_STOP=1 -v pw="$smpw" -v users="$users" -v items="$items" -d "$su" <<'SQL'
ALTER ROLE parley_sm LOGIN PASSWORD :'pw';
INSERT INTO users (jid, domain) SELECT 'bench' || u || '@bench', 'bench'
    FROM generate_series(0, :users - 1) u;
INSERT INTO roster_items (owner, jid, name, subscription)
    SELECT 'bench' || u || '@bench', 'contact' || i || '@example.org', 'Contact ' || i, 'both'
    FROM generate_series(0, :users - 1) u, generate_series(1, :items) i;
INSERT INTO roster_groups (owner, jid, grp) SELECT owner, jid, 'Friends' FROM roster_items;
INSERT INTO roster_version (owner, version) SELECT jid, :items FROM users;
-- A few queued messages per user, so that the planner's statistics are
-- those of a live table (an empty one gets a sequential-scan plan for the
-- quota count, which then degrades as the table fills).
INSERT INTO offline (owner, stanza) SELECT jid, '<message/>' FROM users, generate_series(1, 3);
VACUUM ANALYZE;
SQL

echo "storage bench $(git -C "$top" describe --always --dirty 2>/dev/null || echo '?'), $(nproc) CPUs, PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}'), $users users x $items roster items"
# Each offline-store run starts from the prefilled table: the quota check
# counts the owner's queue, so a table grown by the previous run would make
# the later runs slower.
reset() {
    [ "$1" = offline-store ] || return 0
    psql -X -q -d "$su" -c "DELETE FROM offline WHERE stanza <> '<message/>'" -c "VACUUM ANALYZE offline"
}
for q in roster-get offline-store; do
    for w in $windows; do
        reset "$q"
        "$build/tests/bench/bench_storage" --dsn "$sm" --query "$q" --pipeline on \
            --pool "$pool" --window "$w" --seconds "$seconds" --users "$users"
    done
    reset "$q"
    "$build/tests/bench/bench_storage" --dsn "$sm" --query "$q" --pipeline off \
        --pool "$pool" --window $((2 * pool)) --seconds "$seconds" --users "$users"
done
