#!/usr/bin/env bash
# User-space instructions per message of our server under smtp-source,
# counted by valgrind's callgrind: a figure the host's noise does not move
# (wall-clock rates on a shared machine swing by 30%), for comparing two
# versions of the code.  Needs valgrind and Postfix's smtp-source.
#
#   bench/instructions.sh [asyncio|uvloop|trio|sync] [reuse]
#
# The server runs twice under callgrind, for 200 and for 1,200 messages of
# 10 KB over 4 sessions (a new connection per message unless "reuse");
# the difference of the two totals over 1,000 messages leaves out the
# start-up and shutdown.  Each run takes about half a minute.
set -euo pipefail
backend=${1:-asyncio}
reuse=${2:-}
python=$(python3 -c 'import sys; print(sys.executable)')  # not a shim: valgrind runs it
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

count() {
    local messages=$1 port pid
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    valgrind --tool=callgrind --callgrind-out-file="$out/cg.$messages" "$python" -m smtpproto serve \
        --backend "$backend" --discard --port "$port" --max-connections 4000 --hostname bench.example \
        >/dev/null 2>"$out/valgrind.$messages" &
    pid=$!
    for _ in $(seq 300); do
        (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.2
    done
    smtp-source -s 4 -m "$messages" -l 10240 -f a@example.org -t b@example.org ${reuse:+-d} "127.0.0.1:$port"
    kill -INT "$pid"
    wait "$pid" || true
    awk '/^summary:/ {print $2}' "$out/cg.$messages"
}

small=$(count 200)
large=$(count 1200)
echo "$backend${reuse:+ (connections reused)}: $(( (large - small) / 1000 )) instructions per message"
