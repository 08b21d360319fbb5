# The dbsnap image: dbsnap and PostgreSQL 18's client tools on Debian
# bookworm (glibc), non-root as uid/gid 70 like the jump pod's
# securityContext. A jump pod made from it runs its own dbsnap relay; see
# docs/KUBERNETES.md, "Image of the jump pod", for building, tagging and
# mirroring it.
#
#   docker build -t registry.example.com/team/dbsnap:0.1.0 .

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p dbsnap \
 && install -D -m 0755 target/release/dbsnap /out/dbsnap

FROM debian:bookworm-slim
ARG PG_MAJOR=18
# PostgreSQL's own apt repository (PGDG): Debian bookworm ships 15 only.
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates curl; \
    install -d /usr/share/postgresql-common/pgdg; \
    curl -fsSL -o /usr/share/postgresql-common/pgdg/apt.postgresql.org.asc \
        https://www.postgresql.org/media/keys/ACCC4CF8.asc; \
    echo "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] https://apt.postgresql.org/pub/repos/apt bookworm-pgdg main" \
        > /etc/apt/sources.list.d/pgdg.list; \
    apt-get update; \
    apt-get install -y --no-install-recommends "postgresql-client-${PG_MAJOR}"; \
    apt-get purge -y --auto-remove curl; \
    rm -rf /var/lib/apt/lists/*; \
    groupadd --system --gid 70 dbsnap; \
    useradd --system --uid 70 --gid 70 --home-dir /tmp --shell /usr/sbin/nologin dbsnap
COPY --from=build /out/dbsnap /usr/local/bin/dbsnap
ENV PATH=/usr/lib/postgresql/${PG_MAJOR}/bin:$PATH \
    HOME=/tmp
USER 70:70
ENTRYPOINT ["dbsnap"]
