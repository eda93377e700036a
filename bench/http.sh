#!/bin/sh
# Figures for the HTTP client, with the static musl tool_httpc (the product's flags).
# Prints numbers; it is not a test and asserts nothing.
#   1. loading the system CA bundle (anchors, best of 20 runs)
#   2. HTTPS requests over one keep-alive connection: requests/s, client CPU ms per request
#   3. HTTPS with a new connection per request: full handshake (connections closed by the
#      client, session forgotten) and resumed handshake (server says Connection: close)
# Usage: bench/http.sh [build-dir]   (default: build; needs $B/musl/tool_httpc)
# Environment: N (requests per figure, default 2000), CA_FILE (default: system bundle).
set -eu
cd "$(dirname "$0")/.."
B=${1:-build}
N=${N:-2000}
tool="$B/musl/tool_httpc"
[ -x "$tool" ] || { echo "bench/http.sh: $tool is missing (make B=$B $tool)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'kill "$server_pid" 2>/dev/null || true; rm -rf "$tmp"' EXIT INT TERM
server_pid=""

echo "== 1. CA bundle load (${CA_FILE:-/etc/ssl/certs/ca-certificates.crt})"
SSL_CERT_FILE=${CA_FILE:-/etc/ssl/certs/ca-certificates.crt} "$tool" --ca-bench 20

# A local HTTPS server (node:https, test CA from tests/lib/certs.mjs); /close answers with
# Connection: close so that the client reconnects and resumes its TLS session.
cat > "$tmp/server.mjs" <<'EOF'
import https from 'node:https';
import { writeFileSync } from 'node:fs';
const { testCerts } = await import(process.env.CERTS_MODULE);
const c = testCerts();
const cache = new Map();
const body = 'x'.repeat(512);
const s = https.createServer({ cert: c.localhost.cert, key: c.localhost.key }, (req, res) => {
  if (req.url === '/close') res.setHeader('Connection', 'close');
  res.end(body);
});
s.on('newSession', (id, data, cb) => { cache.set(id.toString('hex'), data); cb(); });
s.on('resumeSession', (id, cb) => cb(null, cache.get(id.toString('hex')) || null));
s.listen(0, '127.0.0.1', () => {
  writeFileSync(process.argv[2], JSON.stringify({ port: s.address().port, ca: c.caFile }));
});
setTimeout(() => process.exit(0), 600000).unref();
EOF
CERTS_MODULE="file://$(pwd)/tests/lib/certs.mjs" node "$tmp/server.mjs" "$tmp/info.json" &
server_pid=$!
i=0
while [ ! -s "$tmp/info.json" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
[ -s "$tmp/info.json" ] || { echo "bench/http.sh: server did not start" >&2; exit 1; }
port=$(sed 's/.*"port":\([0-9]*\).*/\1/' "$tmp/info.json")
ca=$(sed 's/.*"ca":"\([^"]*\)".*/\1/' "$tmp/info.json")
url="https://localhost:$port"

run() { SSL_CERT_FILE="$ca" "$tool" --bench --repeat "$1" "$2" ${3:-}; }

echo "== 2. one keep-alive HTTPS connection, $N requests (512-byte body)"
run 50 "$url/" >/dev/null   # warm-up
run "$N" "$url/"

M=$((N / 4))
echo "== 3a. new connection per request, full handshake (client closes), $M requests"
run "$M" "$url/" --close-between
echo "== 3b. new connection per request, resumed TLS session (server closes), $M requests"
run "$M" "$url/close"
