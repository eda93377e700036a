#!/bin/bash
# Builds the Dockerfile's FROM scratch image without a Docker engine and tests it:
#   tests/image.sh
# Needs root, buildah and debootstrap (Debian packages), node with the npm test tools
# (node_modules: tests/run's `npm ci`) and openssl. Debian's mirror must be reachable: the
# stand-in base image is made from it and the builder stage's ./build.sh apt-gets from it.
#
#  1. A stand-in for debian:bookworm-slim (no registry here): debootstrap --variant=minbase
#     bookworm with the real image's apt sources, committed as docker.io/library/debian:
#     bookworm-slim into a private buildah storage in $LAMBDO_IMAGE_CACHE
#     (/var/cache/lambdo-image), where later runs reuse it (LAMBDO_IMAGE_REFRESH=1 remakes it).
#  2. buildah build of the real Dockerfile, both stages, --pull=never --isolation chroot
#     --storage-driver vfs (the builder stage runs ./build.sh with the host's network).
#  3. The image: config (non-root numeric user, entrypoint /lambdo), its whole filesystem
#     (exactly /lambdo and /etc/ssl/certs/ca-certificates.crt), a static binary, a full CA
#     bundle, and its size uncompressed (at most 1 MB) and gzip-compressed.
#  4. Runs in it (buildah run, chroot isolation, host network): --version; no configuration
#     (exit 2, one line per missing variable, LAMBDO_SQS_QUEUE_URL among them); one real dispatch against the test rig
#     and a start with the image's own CA bundle (tests/lib/image-dispatch.mjs).
# Every buildah command runs in a private mount namespace whose /var/lib/containers and
# /run/containers are empty tmpfs, so nothing outside $LAMBDO_IMAGE_CACHE and tests/out/image/
# is written (buildah's blob-info cache and default stores included).
# Ends with "image: N passed, N failed"; exits 1 on any failure or missing precondition.
set -u
cd "$(dirname "$0")/.." || exit 1
top=$(pwd)
cache=${LAMBDO_IMAGE_CACHE:-/var/cache/lambdo-image}
mirror=${LAMBDO_DEBIAN_MIRROR:-http://deb.debian.org/debian}
out="$top/tests/out/image"
base=docker.io/library/debian:bookworm-slim
tag=localhost/lambdo:image-test
ctr=lambdo-image-test
max_bytes=1000000       # the goal: the whole image at most 1 MB uncompressed
stretch_bytes=600000    # the stretch goal
passed=0 failed=0

say() { printf 'image: %s\n' "$*"; }
pass() { passed=$((passed + 1)); printf 'PASS %s\n' "$*"; }
fail() { failed=$((failed + 1)); printf 'FAIL %s\n' "$*"; }
check() { # what command...
    what=$1; shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}
finish() {
    echo "image: $passed passed, $failed failed"
    [ "$failed" -eq 0 ] && exit 0
    exit 1
}
# A precondition that is truly missing: loud, specific, and a failure (the lead decides
# about skipping).
missing() {
    printf '\nimage: *** PRECONDITION MISSING: %s ***\n\n' "$*" >&2
    fail "precondition: $*"
    finish
}
secs() { echo $(( $(date +%s) - $1 )); }

if [ -z "${LAMBDO_IMAGE_NS:-}" ]; then
    [ "$(id -u)" = 0 ] || missing "tests/image.sh must run as root (buildah --isolation chroot, debootstrap, mount namespace)"
    for tool in buildah unshare flock node openssl tar gzip file; do
        command -v "$tool" >/dev/null 2>&1 || missing "no '$tool' on PATH (Debian packages: buildah debootstrap util-linux nodejs openssl tar gzip file)"
    done
    [ -d node_modules/fauxqs ] || missing "node_modules/ has no fauxqs: run 'npm ci' first (tests/run does)"
    mkdir -p "$cache" /var/lib/containers /run/containers ||
        missing "cannot create $cache (set LAMBDO_IMAGE_CACHE to a writable folder)"
    exec env LAMBDO_IMAGE_NS=1 unshare --mount --propagation private "$0" "$@"
fi

# --- inside the private mount namespace ------------------------------------------------------
mount -t tmpfs -o mode=0700 lambdo-image /var/lib/containers &&
    mount -t tmpfs -o mode=0755 lambdo-image /run/containers ||
    missing "cannot mount tmpfs over /var/lib/containers and /run/containers in a private mount namespace"
exec 9>"$cache/lock"
flock -w 1800 9 || missing "another tests/image.sh holds $cache/lock for 30 minutes"
rm -rf "$out" && mkdir -p "$out"
B() { buildah --root "$cache/storage" --runroot /run/containers/lambdo-runroot --storage-driver vfs "$@"; }
cleanup() { # every container (this storage is ours alone), the image under test, dangling layers
    B rm --all >/dev/null 2>&1
    B rmi -f "$tag" >/dev/null 2>&1
    B rmi --prune >/dev/null 2>&1
}
trap cleanup EXIT
trap 'exit 130' INT TERM
t_start=$(date +%s)
version=$(cat VERSION)
say "buildah $(buildah --version | awk '{print $3}'), cache $cache, logs $out"
cleanup   # leftovers of an interrupted run

# Can buildah make a working container at all (it needs a network backend even for chroot)?
if ! probe=$(B from -q scratch 2> "$out/buildah-probe.log") || ! B rm "$probe" > /dev/null 2>> "$out/buildah-probe.log"; then
    sed 's/^/    /' "$out/buildah-probe.log"
    missing "buildah cannot create a container here: $(grep -m1 . "$out/buildah-probe.log") (Debian packages: buildah netavark)"
fi

# --- 1. the stand-in base image -------------------------------------------------------------
t0=$(date +%s)
[ "${LAMBDO_IMAGE_REFRESH:-}" = 1 ] && { say "LAMBDO_IMAGE_REFRESH=1: remaking the base"; B rmi -f "$base" >/dev/null 2>&1; }
if [ -n "$(B images -q "$base" 2>/dev/null)" ]; then
    made=$(B inspect --type image --format '{{.OCIv1.Created}}' "$base" | cut -d' ' -f1)
    say "base: reusing the cached stand-in $base (made $made)"
    base_kind=warm
else
    command -v debootstrap >/dev/null 2>&1 || missing "no debootstrap (Debian package debootstrap) to make the $base stand-in"
    say "base: debootstrap --variant=minbase bookworm from $mirror (cold, about half a minute)"
    rootfs="$cache/rootfs.tmp"
    rm -rf "$rootfs"
    if ! timeout 900 debootstrap --variant=minbase bookworm "$rootfs" "$mirror" > "$out/debootstrap.log" 2>&1; then
        tail -n 15 "$out/debootstrap.log" | sed 's/^/    /'
        rm -rf "$rootfs"
        missing "debootstrap could not build bookworm from $mirror (Debian's mirror unreachable?); log: $out/debootstrap.log"
    fi
    # What debian:bookworm-slim has and debootstrap does not: deb822 sources with updates and
    # security, no package lists, no downloaded .debs.
    rm -f "$rootfs/etc/apt/sources.list"
    cat > "$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log
    c=$(B from scratch) && m=$(B mount "$c") &&
        tar -C "$rootfs" --numeric-owner --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -cf - . |
        tar -C "$m" --numeric-owner -xpf - &&
        B umount "$c" >/dev/null &&
        B config --cmd '["bash"]' --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            --label org.lambdo.test.stand-in="debootstrap --variant=minbase bookworm $mirror" "$c" &&
        B commit -q --rm "$c" "$base" >/dev/null ||
        missing "could not commit the debootstrap tree as $base in $cache/storage"
    rm -rf "$rootfs"
    base_kind=cold
fi
base_secs=$(secs "$t0")
say "base: ready in ${base_secs}s ($base_kind), $(B images --format '{{.Size}}' "$base" | head -n1)"

# --- 2. build the Dockerfile ------------------------------------------------------------------
t0=$(date +%s)
say "build: buildah build --isolation chroot --storage-driver vfs --pull=never -t $tag . (runs ./build.sh; log $out/build.log)"
if timeout 1800 buildah --root "$cache/storage" --runroot /run/containers/lambdo-runroot --storage-driver vfs \
    build --isolation chroot --pull=never --build-arg VERSION="$version" -t "$tag" -f Dockerfile . \
    > "$out/build.log" 2>&1; then
    pass "the Dockerfile builds (both stages, base resolved locally with --pull=never)"
else
    tail -n 30 "$out/build.log" | sed 's/^/    /'
    fail "the Dockerfile builds (see $out/build.log)"
    finish
fi
build_secs=$(secs "$t0")
grep '^build.sh: ' "$out/build.log" | sed 's/^/    /'
if [ -d .deps ]; then   # a context with .deps/ would have let build.sh skip its fetch
    check "the build context left out .deps/ (.dockerignore): build.sh fetched its sources" \
        grep -q '^build.sh: fetching BearSSL and cJSON' "$out/build.log"
fi
say "build: ${build_secs}s"

# --- 3. the image as stored -------------------------------------------------------------------
B inspect --type image "$tag" > "$out/inspect.json"
cfg() { node -e 'const i = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).OCIv1;
  const v = process.argv[2].split(".").reduce((o, k) => (o == null ? o : o[k]), i);
  process.stdout.write(v === undefined ? "undefined" : JSON.stringify(v));' "$out/inspect.json" "$1"; }
user=$(cfg config.User | tr -d '"')
entrypoint=$(cfg config.Entrypoint)
say "config: User=$user Entrypoint=$entrypoint Cmd=$(cfg config.Cmd) Env=$(cfg config.Env)"
say "config: Labels=$(cfg config.Labels)"
numeric_non_root() { [[ $1 =~ ^[1-9][0-9]*:[1-9][0-9]*$ ]]; }
check "runs as a non-root numeric user:group ($user)" numeric_non_root "$user"
check "entrypoint is [\"/lambdo\"]" test "$entrypoint" = '["/lambdo"]'
label_version=$(B inspect --type image --format '{{index .OCIv1.Config.Labels "org.opencontainers.image.version"}}' "$tag")
check "label org.opencontainers.image.version is $version ($label_version)" test "$label_version" = "$version"

# The image exactly as a registry would get it: gzip-compressed layers in an OCI layout.
B push -q "$tag" "oci:$out/oci:lambdo" > /dev/null 2> "$out/push.log" || { cat "$out/push.log"; fail "buildah push to an OCI layout"; finish; }
manifest=$(node -e 'const fs = require("fs"), d = process.argv[1];
  const idx = JSON.parse(fs.readFileSync(d + "/index.json", "utf8"));
  process.stdout.write(idx.manifests[0].digest.replace("sha256:", ""));' "$out/oci")
blob() { echo "$out/oci/blobs/sha256/${1#sha256:}"; }
layers=$(node -e 'const m = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  for (const l of m.layers) console.log(l.digest, l.size, l.mediaType);' "$(blob "$manifest")")
config_digest=$(node -e 'process.stdout.write(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).config.digest)' "$(blob "$manifest")")
nlayers=$(echo "$layers" | grep -c .)
check "one layer ($nlayers)" test "$nlayers" = 1
raw=0 gz=0
rm -f "$out/filesystem.txt"
while read -r digest size type; do
    [ -n "$digest" ] || continue
    gz=$((gz + size))
    raw=$((raw + $(gzip -dc "$(blob "$digest")" | wc -c)))
    gzip -dc "$(blob "$digest")" | tar -tv --numeric-owner >> "$out/filesystem.txt"
    mkdir -p "$out/rootfs" && gzip -dc "$(blob "$digest")" | tar -C "$out/rootfs" -xf -
    say "layer: $type, $size bytes compressed"
done <<< "$layers"
meta=$(( $(wc -c < "$(blob "$manifest")") + $(wc -c < "$(blob "$config_digest")") ))
say "filesystem of the image (every layer):"
sed 's/^/    /' "$out/filesystem.txt"
paths=$(awk '{print $NF}' "$out/filesystem.txt" | sed 's#^\./##; s#/$##' | grep -v '^\.\?$' | sort | tr '\n' ' ')
check "the filesystem is exactly /lambdo and /etc/ssl/certs/ca-certificates.crt (and their folders)" \
    test "$paths" = "etc etc/ssl etc/ssl/certs etc/ssl/certs/ca-certificates.crt lambdo "
check "/lambdo is a regular file, 0755, owned by 0:0" \
    grep -Eq '^-rwxr-xr-x 0/0 .* (\./)?lambdo$' "$out/filesystem.txt"
check "the CA bundle is a regular file, 0644, owned by 0:0" \
    grep -Eq '^-rw-r--r-- 0/0 .* (\./)?etc/ssl/certs/ca-certificates.crt$' "$out/filesystem.txt"
binary="$out/rootfs/lambdo" bundle="$out/rootfs/etc/ssl/certs/ca-certificates.crt"
say "lambdo: $(wc -c < "$binary") bytes, $(file -b "$binary" | cut -d, -f1-5)"
static_stripped() { file -b "$1" | grep -q 'statically linked' && file -b "$1" | grep -q ', stripped'; }
check "lambdo is a static, stripped executable" static_stripped "$binary"
ncerts=$(grep -c 'BEGIN CERTIFICATE' "$bundle")
say "CA bundle: $(wc -c < "$bundle") bytes, $ncerts certificates (Debian's ca-certificates, untrimmed)"
check "the CA bundle is Debian's full bundle (more than 100 certificates)" test "$ncerts" -gt 100
total=$((raw + meta))
say "size: uncompressed ${raw} bytes of layer tar + ${meta} bytes manifest and config = ${total} bytes ($((total / 1024)) KiB)"
say "size: gzip-compressed ${gz} bytes of layer + ${meta} = $((gz + meta)) bytes ($(((gz + meta) / 1024)) KiB) to push or pull"
check "the whole image is at most $max_bytes bytes uncompressed ($total)" test "$total" -le "$max_bytes"
if [ "$total" -le "$stretch_bytes" ]; then say "size: the $stretch_bytes-byte stretch goal is met"
else say "size: the $stretch_bytes-byte stretch goal is NOT met (not a failure)"; fi

# --- 4. run it ----------------------------------------------------------------------------------
t0=$(date +%s)
B from -q --pull=never --name "$ctr" "$tag" > /dev/null || { fail "buildah from $tag"; finish; }
ep=$(echo "$entrypoint" | node -e 'process.stdout.write(JSON.parse(require("fs").readFileSync(0, "utf8")).join(" "))')
# buildah's own lines about the exit status, which go to the same stderr as lambdo's.
not_buildah() { grep -Ev '^(subprocess exited (with status [0-9]+|on [a-z]+)|Error: exit status [0-9]+)$'; }
run() { # stdout-file stderr-file args...
    o=$1 e=$2; shift 2
    # shellcheck disable=SC2086
    timeout 60 buildah --root "$cache/storage" --runroot /run/containers/lambdo-runroot --storage-driver vfs \
        run --isolation chroot "$ctr" -- $ep "$@" > "$o" 2> "$e.all"
    rc=$?
    not_buildah < "$e.all" > "$e"
    return $rc
}
say "run: $ep --version"
run "$out/version.out" "$out/version.err" --version; rc=$?
sed 's/^/    /' "$out/version.out" "$out/version.err"
check "--version exits 0 ($rc)" test "$rc" = 0
check "--version prints 'lambdo $version'" grep -Eq "^lambdo ${version//./\\.}( |\$)" "$out/version.out"
say "run: $ep with no configuration"
run "$out/noconf.out" "$out/noconf.err"; rc=$?
sed 's/^/    /' "$out/noconf.out" "$out/noconf.err"
check "no configuration exits 2 ($rc)" test "$rc" = 2
# One line per missing variable, each on stderr and saying it is configuration.
lines_naming() { [ ! -s "$out/noconf.out" ] && ! grep -qv '^lambdo: configuration: ' "$out/noconf.err" &&
                 grep -q "^lambdo: configuration: $1: required" "$out/noconf.err"; }
check "no configuration: a configuration line each, one naming LAMBDO_SQS_QUEUE_URL" lines_naming LAMBDO_SQS_QUEUE_URL
say "run: one dispatch against the test rig (tests/lib/image-dispatch.mjs)"
timeout 240 node tests/lib/image-dispatch.mjs --container "$ctr" --entrypoint "$ep" --user "$user" -- \
    buildah --root "$cache/storage" --runroot /run/containers/lambdo-runroot --storage-driver vfs \
    run --isolation chroot > "$out/dispatch.log" 2>&1
rc=$?
cat "$out/dispatch.log"
passed=$((passed + $(grep -c '^PASS ' "$out/dispatch.log")))
failed=$((failed + $(grep -c '^FAIL ' "$out/dispatch.log")))
if [ "$rc" -ne 0 ] && ! grep -q '^FAIL ' "$out/dispatch.log"; then fail "image-dispatch.mjs exited $rc"; fi
run_secs=$(secs "$t0")

say "timings: base ${base_secs}s ($base_kind), build ${build_secs}s, runs ${run_secs}s, total $(secs "$t_start")s"
finish
