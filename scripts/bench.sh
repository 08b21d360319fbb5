#!/usr/bin/env bash
# Benchmark: dbsnap create vs the vendor workflow (pg_dump -Fc of each
# database, one after the other) on a throwaway two-database platform.
# Prints wall times, sizes and dbsnap's peak memory. Not part of the tests.
#   bash scripts/bench.sh [ROWS]     (default 2000000 rows per database)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rows="${1:-2000000}"

bash scripts/setup.sh >/dev/null
cargo build --release --locked -q -p dbsnap
bin="$PWD/target/release/dbsnap"
work="$(mktemp -d)"
chmod 755 "$work"
export DBSNAP_HOME="$work/home"
cleanup() {
  if [ -n "${stop_cmd:-}" ]; then sh -c "$stop_cmd -m immediate" >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "setting up a platform with $rows rows per database..." >&2
"$bin" demo --keep --rows "$rows" --dir "$work/demo" --json > "$work/demo.json"
{ read -r server_bin; read -r stop_cmd; read -r port; } < <(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
print(d["server_bin"], d["stop_command"], d["databases"][0].rsplit(":", 1)[1].split("/")[0], sep="\n")
' "$work/demo.json")
export PGPASSFILE="$work/demo/pgpass"
"$server_bin/psql" -X -q -h 127.0.0.1 -p "$port" -U postgres -d app-core -c \
  "CREATE TABLE events AS SELECT g AS id, now() - g * interval '1 second' AS at, md5(g::text) AS payload FROM generate_series(1, $rows) g"

now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.2f}')"; }

t0=$(now)
for db in app-core app-backend; do
  "$server_bin/pg_dump" -Fc -h 127.0.0.1 -p "$port" -U postgres -d "$db" -f "$work/$db.dump"
done
t1=$(now)
seq_time=$(elapsed "$t0" "$t1")
seq_size=$(du -cb "$work"/app-*.dump | tail -1 | cut -f1)

t0=$(now)
/usr/bin/time -f "%M" -o "$work/rss" "$bin" --config "$work/demo/dbsnap.toml" create --target demo --no-progress --json > "$work/create.json"
t1=$(now)
snap_time=$(elapsed "$t0" "$t1")
file=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["file"])' "$work/create.json")
snap_size=$(stat -c %s "$file")

t0=$(now)
"$bin" verify --file "$file" >/dev/null
t1=$(now)
verify_time=$(elapsed "$t0" "$t1")

# Restore: truncate + pg_restore --data-only of each database vs dbsnap's
# data-only restore (equal schema versions), both one transaction per database.
t0=$(now)
for db in app-core app-backend; do
  "$server_bin/psql" -X -q -h 127.0.0.1 -p "$port" -U postgres -d "$db" -c \
    "DO \$\$ DECLARE r record; BEGIN FOR r IN SELECT format('%I.%I', schemaname, tablename) t FROM pg_tables WHERE schemaname = 'public' LOOP EXECUTE 'TRUNCATE ' || r.t || ' CASCADE'; END LOOP; END \$\$" >/dev/null
  "$server_bin/pg_restore" --data-only --single-transaction --disable-triggers -h 127.0.0.1 -p "$port" -U postgres -d "$db" "$work/$db.dump"
done
t1=$(now)
pgr_time=$(elapsed "$t0" "$t1")

t0=$(now)
"$bin" --config "$work/demo/dbsnap.toml" restore --file "$file" --yes --no-safety-snapshot --no-progress --json > "$work/restore.json"
t1=$(now)
restore_time=$(elapsed "$t0" "$t1")

printf '\n%-44s %10s %14s\n' "workflow" "seconds" "bytes"
printf '%-44s %10s %14s\n' "pg_dump -Fc app-core; pg_dump -Fc app-backend" "$seq_time" "$seq_size"
printf '%-44s %10s %14s\n' "dbsnap create (consistent cut, concurrent)" "$snap_time" "$snap_size"
printf '%-44s %10s\n' "dbsnap verify" "$verify_time"
printf '%-44s %10s\n' "truncate + pg_restore --data-only -1, each db" "$pgr_time"
printf '%-44s %10s\n' "dbsnap restore (data-only, checked, 1 tx/db)" "$restore_time"
printf 'dbsnap create peak RSS: %s KiB\n' "$(cat "$work/rss")"
