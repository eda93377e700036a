#!/bin/sh
# Builds ./lambdo, a fully static, stripped musl binary, and (with `./build.sh test`)
# everything the tests need. Run as root on a fresh Debian bookworm machine it installs
# what is missing first. BearSSL and cJSON are fetched as Debian *source* packages into
# the git-ignored .deps/ and compiled here: no third-party source lives in the repo, and
# Debian's glibc-fortified libbearssl.a never reaches the musl link.
#
#   ./build.sh          the static binary
#   ./build.sh test     also the sanitizer, valgrind and fuzzer builds of tests/
#   ./build.sh demo     the binary, then the whole flow locally (demo/demo.mjs): an SQS
#                       emulator, `lambdo send`, `lambdo --once` with the local backend
#   ./build.sh --help   the usage, exit 2 (an unknown argument prints it too, on stderr)
set -eu
cd "$(dirname "$0")"
top=$(pwd)
deps="$top/.deps"
want=${1:-lambdo}

say() { printf 'build.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
usage() {
    cat <<'EOF'
usage: ./build.sh [test | demo]

  ./build.sh          the static binary ./lambdo (as root, installs the Debian packages
                      missing; fetches the BearSSL and cJSON source packages into .deps/)
  ./build.sh test     also the sanitizer, valgrind and fuzzer builds of tests/
  ./build.sh demo     the binary, then the whole flow locally: an SQS emulator,
                      `lambdo send`, `lambdo --once` with the local backend
EOF
}
case "$#:$want" in
    0:* | 1:lambdo | 1:test | 1:demo) ;;
    1:-h | 1:--help) usage; exit 2 ;;  # issue #10: --help, like a wrong argument, exits 2
    1:*) say "unknown argument \"$1\""; usage >&2; exit 2 ;;
    *) say "one argument at most"; usage >&2; exit 2 ;;
esac

# Debian packages each kind of build needs.
pkgs="musl-tools make dpkg-dev xz-utils ca-certificates file"
if [ "$want" = demo ]; then
    command -v node >/dev/null 2>&1 || pkgs="$pkgs nodejs npm"
fi
if [ "$want" = test ]; then
    pkgs="$pkgs clang libclang-rt-14-dev libcmocka-dev valgrind openssl python3 util-linux php-cli buildah netavark debootstrap debian-archive-keyring strace"
    # Node may come from Debian or from NodeSource (which bundles npm): only add it if absent.
    command -v node >/dev/null 2>&1 || pkgs="$pkgs nodejs npm"
fi

install_missing() {
    missing=""
    for p in $pkgs; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing="$missing $p"
    done
    [ -z "$missing" ] && return 0
    [ "$(id -u)" = 0 ] || die "missing packages:$missing (run as root, or install them)"
    say "installing:$missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

# apt-get source with a private deb-src list, so /etc/apt is never touched.
fetch_sources() {
    [ -f "$deps/bearssl/src/settings.c" ] && [ -f "$deps/cjson/cJSON.c" ] && return 0
    say "fetching BearSSL and cJSON source packages into .deps/"
    rm -rf "$deps" && mkdir -p "$deps/apt/lists/partial" "$deps/dl"
    echo "deb-src http://deb.debian.org/debian bookworm main" > "$deps/apt/sources.list"
    aptopts="-o Dir::Etc::SourceList=$deps/apt/sources.list -o Dir::Etc::SourceParts=/dev/null
             -o Dir::State::Lists=$deps/apt/lists -o Debug::NoLocking=1 -o APT::Sandbox::User=root"
    # shellcheck disable=SC2086
    apt-get $aptopts update -qq
    # shellcheck disable=SC2086
    (cd "$deps/dl" && apt-get $aptopts source --download-only -qq bearssl cjson)
    (cd "$deps/dl" && dpkg-source -q -x bearssl_*.dsc "$deps/bearssl" &&
                      dpkg-source -q -x cjson_*.dsc "$deps/cjson") >/dev/null
    for f in "$deps"/dl/bearssl_*.dsc "$deps"/dl/cjson_*.dsc; do
        sed -n 's/^Version: //p' "$f" > "$deps/$(basename "$f" | cut -d_ -f1).version"
    done
}

# promtool (Debian's prometheus package) checks the /metrics output in the tests; only the
# binary is unpacked, so no Prometheus server gets installed or started.
fetch_promtool() {
    [ -x "$deps/promtool/usr/bin/promtool" ] && return 0
    (cd "$deps/dl" && rm -f prometheus_*.deb &&
     apt-get -o APT::Sandbox::User=root download -qq prometheus >/dev/null 2>&1 ||
     { apt-get update -qq && apt-get -o APT::Sandbox::User=root download -qq prometheus; }) &&
    dpkg-deb -x "$deps"/dl/prometheus_*.deb "$deps/promtool" &&
    rm -f "$deps"/dl/prometheus_*.deb
}

install_missing
fetch_sources
[ "$want" = test ] && { fetch_promtool || say "warning: could not fetch promtool; the metrics tests will say so"; }
say "BearSSL $(cat "$deps/bearssl.version"), cJSON $(cat "$deps/cjson.version") (Debian source packages)"

jobs=$(nproc 2>/dev/null || echo 2)
make -s -j"$jobs" BEARSSL="$deps/bearssl" CJSON="$deps/cjson" lambdo
[ "$want" = test ] && make -s -j"$jobs" BEARSSL="$deps/bearssl" CJSON="$deps/cjson" test-build
say "built $(ls -l lambdo | awk '{print $5}') bytes: $(file -b lambdo | cut -d, -f1-5)"
if [ "$want" = demo ]; then
    [ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error
    exec node demo/demo.mjs
fi
