#!/usr/bin/env bash
# Build deploy/Dockerfile, unchanged, and run it, without a Docker engine:
#   .ci/image.sh [all]     install tools, build stand-in bases, build, run, test, stop (CI)
#   .ci/image.sh bases     only the stand-in base images
#   .ci/image.sh build     bases + the wellhead image
#   .ci/image.sh run|stop  start / stop the containers: the demo on 127.0.0.1:$PORT and, when
#                          PostgreSQL and Redis are up, the default command on :8000 with
#                          the Kubernetes ConfigMap's config
#   .ci/image.sh env       the variables tests/test_image.py reads
#
# The base images cannot be pulled here (only Debian's and the language registries are
# reachable), so local stand-ins are built and tagged with the real names, and the build runs
# with --pull=never:
#   builder  python:3.13-slim-trixie         mmdebstrap minbase of Debian 13 with python3,
#                                            python3-venv and ca-certificates
#   runtime  gcr.io/distroless/python3-debian13:nonroot
#                                            distroless's package set (its python3 BUILD file)
#                                            extracted from Debian 13 .debs without maintainer
#                                            scripts: no shell, no package manager, passwd with
#                                            nonroot 65532, entrypoint /usr/bin/python3.13
# Podman and buildah use storage, config and events under $DIR only (vfs driver, runc with
# cgroupfs), so nothing global is changed. The stand-ins are cached in $DIR/bases and rebuilt
# only when this script changes.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
DIR="${WELLHEAD_IMAGE_DIR:-/tmp/wellhead-image}"
PORT="${WELLHEAD_IMAGE_PORT:-18473}"
IMAGE="${WELLHEAD_IMAGE:-localhost/wellhead:ci}"
NAME="${WELLHEAD_IMAGE_CONTAINER:-wellhead-ci}"
MIRROR="${WELLHEAD_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
BUILDER_REF=docker.io/library/python:3.13-slim-trixie
RUNTIME_REF=gcr.io/distroless/python3-debian13:nonroot
# distroless python3 on Debian 13 = static + base + cc + python3 package lists.
RUNTIME_DEBS=(
    base-files netbase tzdata ca-certificates media-types
    libc6 libssl3t64
    libgcc-s1 libgomp1 libstdc++6
    libbz2-1.0 libdb5.3t64 libexpat1 liblzma5 libsqlite3-0 libuuid1 libncursesw6 libtinfo6
    zlib1g libcom-err2 libcrypt1 libgssapi-krb5-2 libk5crypto3 libkeyutils1 libkrb5-3
    libkrb5support0 libnsl2 libreadline8t64 libtirpc3t64 libffi8 libmpdec4 libzstd1
    libpython3.13-minimal libpython3.13-stdlib python3.13-minimal
)

export CONTAINERS_STORAGE_CONF="$DIR/conf/storage.conf"
export CONTAINERS_CONF="$DIR/conf/containers.conf"
export CONTAINERS_REGISTRIES_CONF="$DIR/conf/registries.conf"
export BUILDAH_ISOLATION=chroot

log() { echo "image.sh: $*" >&2; }

tools() {
    local missing=()
    for cmd in buildah podman runc mmdebstrap newuidmap; do
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing buildah podman runc mmdebstrap uidmap (missing: ${missing[*]})"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            buildah podman runc mmdebstrap uidmap >/dev/null
    fi
    mkdir -p "$DIR/conf" "$DIR/bases"
    cat >"$CONTAINERS_STORAGE_CONF" <<EOF
[storage]
driver = "vfs"
graphroot = "$DIR/storage"
runroot = "$DIR/run"
EOF
    cat >"$CONTAINERS_CONF" <<EOF
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$DIR/events.log"
EOF
    cat >"$CONTAINERS_REGISTRIES_CONF" <<EOF
unqualified-search-registries = ["docker.io"]
short-name-mode = "permissive"
EOF
}

# A stand-in is rebuilt when its recipe (the function that builds it, the package list, the
# names) changes or it is missing from storage.
recipe() {
    { declare -f "$1_base"; echo "${RUNTIME_DEBS[*]} $BUILDER_REF $RUNTIME_REF"; } |
        sha256sum | cut -d' ' -f1
}

fresh() {
    local stamp="$DIR/bases/$1.stamp" ref="$2"
    [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$(recipe "$1")" ] && podman image exists "$ref"
}

stamp() { recipe "$1" >"$DIR/bases/$1.stamp"; }

builder_base() {
    fresh builder "$BUILDER_REF" && return
    log "stand-in $BUILDER_REF: mmdebstrap trixie minbase + python3 python3-venv"
    rm -f "$DIR/bases/builder.tar"
    mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
        --format=tar trixie "$DIR/bases/builder.tar" "$MIRROR"
    podman import --quiet \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        "$DIR/bases/builder.tar" "$BUILDER_REF" >/dev/null
    rm -f "$DIR/bases/builder.tar"
    stamp builder
}

runtime_base() {
    fresh runtime "$RUNTIME_REF" && return
    log "stand-in $RUNTIME_REF: ${#RUNTIME_DEBS[@]} Debian 13 packages, extracted"
    local root="$DIR/bases/runtime"
    rm -rf "$root"
    mkdir -p "$root"
    local include
    include=$(IFS=,; echo "${RUNTIME_DEBS[*]}")
    # extract: unpack exactly these packages; no dependency resolution, no maintainer scripts.
    mmdebstrap --quiet --variant=extract --include="$include" --format=directory \
        trixie "$root" "$MIRROR"
    # Debian 13 packages ship everything under /usr: the merged-/usr links a bootstrap makes.
    for d in bin sbin lib lib64; do
        if [ -d "$root/usr/$d" ] && [ ! -e "$root/$d" ]; then ln -s "usr/$d" "$root/$d"; fi
    done
    rm -rf "$root/var/lib/apt" "$root/var/cache/apt" "$root/etc/apt" "$root/var/lib/dpkg" \
        "$root/usr/share/doc" "$root/usr/share/man" "$root/usr/share/info"
    mkdir -p "$root/tmp" "$root/home/nonroot" "$root/root" "$root/etc/ssl/certs"
    chmod 1777 "$root/tmp"
    chmod 700 "$root/root"
    chown 65532:65532 "$root/home/nonroot"
    cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
    cat >"$root/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
tty:x:5:
staff:x:50:
nonroot:x:65532:
EOF
    # ca-certificates' postinst (not run) would build the bundle from the Mozilla set.
    cat "$root"/usr/share/ca-certificates/mozilla/*.crt >"$root/etc/ssl/certs/ca-certificates.crt"
    ln -sf /usr/share/zoneinfo/Etc/UTC "$root/etc/localtime"
    ln -sf python3.13 "$root/usr/bin/python3"
    ln -sf python3.13 "$root/usr/bin/python"
    ldconfig -r "$root"
    # distroless has no shell: make sure no package brought one.
    for sh in bin/sh bin/bash bin/dash usr/bin/sh usr/bin/bash usr/bin/dash; do
        if [ -e "$root/$sh" ] || [ -L "$root/$sh" ]; then
            log "runtime stand-in has /$sh"
            exit 1
        fi
    done
    tar -C "$root" --numeric-owner -cf "$DIR/bases/runtime.tar" .
    podman import --quiet \
        --change 'USER 65532' \
        --change 'WORKDIR /home/nonroot' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENTRYPOINT ["/usr/bin/python3.13"]' \
        "$DIR/bases/runtime.tar" "$RUNTIME_REF" >/dev/null
    rm -rf "$root" "$DIR/bases/runtime.tar"
    stamp runtime
}

bases() {
    tools
    builder_base
    runtime_base
}

build() {
    bases
    log "building $IMAGE from deploy/Dockerfile"
    # The host's CA bundle is mounted over the builder's for RUN steps only (pip reaches PyPI
    # through this machine's TLS-inspecting egress); it is not part of any layer.
    buildah bud --quiet --isolation chroot --format docker --pull=never --network host \
        --volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
        --file deploy/Dockerfile --tag "$IMAGE" "$ROOT" >/dev/null
    # vfs keeps full copies: drop the previous build's untagged image and the builder stage.
    podman image prune --force >/dev/null
}

stop() {
    podman rm --force --time 5 "$NAME" "$NAME-k8s" >/dev/null 2>&1 || true
}

run() {
    stop
    # The demo config (no --config): the image's CMD names /etc/wellhead/wellhead.yaml, which
    # a deployment mounts; here the command is overridden to serve the demo data. The root
    # filesystem is read-only and /tmp a tmpfs, as in the Kubernetes manifests.
    podman run --detach --name "$NAME" --network host --read-only \
        --tmpfs /tmp:rw,size=1g,mode=1777 --cap-drop ALL --security-opt no-new-privileges \
        "$IMAGE" serve --transport http --host 127.0.0.1 --port "$PORT" >/dev/null
    for _ in $(seq 1 300); do
        if python3 - "$PORT" <<'EOF' 2>/dev/null; then
import sys, urllib.request
urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/healthz", timeout=1).read()
EOF
            return 0
        fi
        if [ "$(podman inspect --format '{{.State.Running}}' "$NAME" 2>/dev/null)" != true ]; then
            break
        fi
        sleep 0.5
    done
    log "the container did not answer /healthz; its log:"
    podman logs "$NAME" >&2 || true
    return 1
}

# The image's default command (HTTP on 0.0.0.0:8000, /etc/wellhead/wellhead.yaml) with the
# config Kubernetes would mount: the ConfigMap rendered from the Redis overlay, its variables
# pointing at the PostgreSQL and Redis that .ci/run started.
run_k8s() {
    if [ -z "${WELLHEAD_TEST_PG_DSN:-}" ] || [ -z "${WELLHEAD_TEST_REDIS_URL:-}" ]; then
        log "WELLHEAD_TEST_PG_DSN / WELLHEAD_TEST_REDIS_URL not set: not starting $NAME-k8s"
        return 0
    fi
    mkdir -p "$DIR/k8s"
    kubectl kustomize deploy/kubernetes/overlays/redis | python -c '
import sys, yaml
(cm,) = [d for d in yaml.safe_load_all(sys.stdin) if d and d["kind"] == "ConfigMap"]
sys.stdout.write(cm["data"]["wellhead.yaml"])' >"$DIR/k8s/wellhead.yaml"
    podman run --detach --name "$NAME-k8s" --network host --read-only \
        --tmpfs /tmp:rw,size=256m,mode=1777 --cap-drop ALL --security-opt no-new-privileges \
        --volume "$DIR/k8s/wellhead.yaml:/etc/wellhead/wellhead.yaml:ro" \
        --env WELLHEAD_WAREHOUSE_DSN="$WELLHEAD_TEST_PG_DSN" \
        --env WELLHEAD_REDIS_URL="$WELLHEAD_TEST_REDIS_URL" \
        --env WELLHEAD_CURSOR_SECRET="image-ci-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')" \
        "$IMAGE" >/dev/null
    for _ in $(seq 1 120); do
        if python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/readyz', timeout=1)" \
            2>/dev/null; then
            return 0
        fi
        if [ "$(podman inspect --format '{{.State.Running}}' "$NAME-k8s" 2>/dev/null)" != true ]; then
            break
        fi
        sleep 0.5
    done
    log "$NAME-k8s did not become ready; its log:"
    podman logs "$NAME-k8s" >&2 || true
    return 1
}

env_vars() {
    echo "export WELLHEAD_TEST_IMAGE=$IMAGE"
    echo "export WELLHEAD_TEST_IMAGE_URL=http://127.0.0.1:$PORT"
    echo "export WELLHEAD_TEST_IMAGE_CONTAINER=$NAME"
    if podman container exists "$NAME-k8s" 2>/dev/null; then
        echo "export WELLHEAD_TEST_IMAGE_K8S_URL=http://127.0.0.1:8000"
        echo "export WELLHEAD_TEST_IMAGE_K8S_CONTAINER=$NAME-k8s"
    fi
    echo "export CONTAINERS_STORAGE_CONF=$CONTAINERS_STORAGE_CONF"
    echo "export CONTAINERS_CONF=$CONTAINERS_CONF"
    echo "export CONTAINERS_REGISTRIES_CONF=$CONTAINERS_REGISTRIES_CONF"
}

case "${1:-all}" in
all)
    t0=$(date +%s)
    trap stop EXIT
    bases
    t1=$(date +%s)
    build
    t2=$(date +%s)
    run
    run_k8s
    t3=$(date +%s)
    eval "$(env_vars)"
    python -m pytest -q tests/test_image.py
    t4=$(date +%s)
    log "bases $((t1 - t0)) s, build $((t2 - t1)) s, start $((t3 - t2)) s, tests $((t4 - t3)) s," \
        "total $((t4 - t0)) s"
    ;;
bases) bases ;;
build) build ;;
run) tools && run && run_k8s ;;
stop) tools && stop ;;
env) env_vars ;;
*)
    echo "usage: $0 [all|bases|build|run|stop|env]" >&2
    exit 2
    ;;
esac
