#!/bin/sh
# tests/bench/run-router-bench.sh - measure parley-router's throughput.
#
# Builds (if needed) a release tree in build/rel (no sanitizers, -O2),
# writes a router config with two internal components into a temporary
# directory, starts the router pinned to CPU 0, and runs bench_router pinned
# to CPU 1 for 200-byte and 2 KB stanzas, plain messages and r:route
# envelopes. Prints one line per run; see tests/bench/README.md.
#
# Environment: SECONDS_PER_RUN (default 10), WINDOW (default 1000),
# BUILD (default build/rel), SIZES (default "200 2048"), MODES
# (default "plain route"), ROUTER_CPU (0), BENCH_CPU (1).
set -eu

top=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD:-$top/build/rel}
seconds=${SECONDS_PER_RUN:-10}
window=${WINDOW:-1000}
sizes=${SIZES:-200 2048}
modes=${MODES:-plain route}
rcpu=${ROUTER_CPU:-0}
bcpu=${BENCH_CPU:-1}

if [ ! -f "$build/Makefile" ]; then
    mkdir -p "$build"
    [ -x "$top/configure" ] || (cd "$top" && autoreconf -fi >/dev/null)
    (cd "$build" && "$top/configure" -q CFLAGS="-O2 -g")
fi
if grep -q '^PARLEY_CFLAGS.*-fsanitize' "$build/Makefile"; then
    echo "run-router-bench: $build is a sanitizer build; use a release build" >&2
    exit 1
fi
make -s -C "$build" -j"$(nproc)" router/parley-router tests/bench/bench_router >/dev/null

dir=$(mktemp -d /tmp/parley-bench.XXXXXX)
chmod 755 "$dir"
pid=
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        wait "$pid" || true
    fi
    rm -rf "$dir"
}
trap cleanup EXIT INT TERM

user=
owner=$(id -u)
if [ "$(id -u)" -eq 0 ]; then
    # the router refuses to run as root without <user>
    user="<user>nobody</user>"
fi
mkdir "$dir/secrets"
chmod 755 "$dir/secrets"
for n in bench-a bench-b; do
    head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/secrets/$n.secret"
    chmod 600 "$dir/secrets/$n.secret"
    [ -z "$user" ] || chown nobody "$dir/secrets/$n.secret"
done
cat >"$dir/router-users.xml" <<EOF
<components>
  <component name='bench-a' internal='true' uid='$owner'><secret file='$dir/secrets/bench-a.secret'/></component>
  <component name='bench-b' internal='true' uid='$owner'><secret file='$dir/secrets/bench-b.secret'/></component>
</components>
EOF
cat >"$dir/router.xml" <<EOF
<router>
  $user
  <pidfile>$dir/router.pid</pidfile>
  <log><level>notice</level></log>
  <users>$dir/router-users.xml</users>
  <listen><unix path='$dir/router.sock' mode='0660'/></listen>
  <limits><queue-max>4194304</queue-max></limits>
</router>
EOF
chmod 644 "$dir/router.xml" "$dir/router-users.xml"

taskset -c "$rcpu" "$build/router/parley-router" -f -c "$dir/router.xml" 2>"$dir/router.log" &
pid=$!
i=0
while [ ! -S "$dir/router.sock" ]; do
    i=$((i + 1))
    if [ $i -gt 200 ] || ! kill -0 "$pid" 2>/dev/null; then
        echo "run-router-bench: the router did not start:" >&2
        cat "$dir/router.log" >&2
        exit 1
    fi
    sleep 0.05
done

echo "parley-router $(git -C "$top" describe --always --dirty 2>/dev/null || echo '?'), $(nproc) CPUs, router on CPU $rcpu, bench on CPU $bcpu"
for mode in $modes; do
    for size in $sizes; do
        flag=
        [ "$mode" = route ] && flag=--route
        taskset -c "$bcpu" "$build/tests/bench/bench_router" --router "unix:$dir/router.sock" \
            --from bench-a --to bench-b --secrets "$dir/secrets" --pid "$pid" \
            --size "$size" --seconds "$seconds" --window "$window" $flag
    done
done
