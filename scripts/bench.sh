#!/usr/bin/env bash
# Benchmark (not a test): dbsnap create/restore against pg_dump/pg_restore
# on a generated two-database platform, in the same run, on this machine.
#
#   bash scripts/bench.sh [ROWS] [RUNS]
#     ROWS  rows of the dominant table (default 1500000, about 0.5 GB on disk)
#     RUNS  runs of each workflow; medians are printed (default 3)
#   DBSNAP_BENCH_PG=15|18 picks the server (default 15), DBSNAP_BENCH_JOBS the
#   parallelism of every parallel contender (default: the machine's cores,
#   dbsnap's own default).
#
# Data: app-core holds `events` (jsonb, text, numeric, bytea, timestamps;
# the dominant table) and app-backend 200 small tables plus a medium one;
# both have schema_migrations, so a restore at the same version is
# data-only. Prints wall times (median), ratios to each anchor, sizes and
# peak RSS (max over runs, from /usr/bin/time) and the CPU seconds (user +
# system, median) of the client side (dbsnap, pg_dump, pg_restore, psql;
# the server's are not counted).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rows="${1:-1500000}"
runs="${2:-3}"
major="${DBSNAP_BENCH_PG:-15}"
jobs="${DBSNAP_BENCH_JOBS:-$(nproc)}"

pg18_bin="$(bash scripts/setup.sh --demo 2>/dev/null | tail -1)"
cargo build --release --locked -q -p dbsnap
bin="$PWD/target/release/dbsnap"
if [ "$major" = 18 ]; then server_bin="$pg18_bin"; else server_bin="/usr/lib/postgresql/$major/bin"; fi
work="$(mktemp -d)"
chmod 755 "$work"
export DBSNAP_HOME="$work/home"
cleanup() {
  if [ -n "${stop_cmd:-}" ]; then sh -c "$stop_cmd -m immediate" >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "setting up PostgreSQL $major with a $rows-row dominant table (jobs=$jobs, runs=$runs)..." >&2
PATH="$server_bin:$PATH" "$bin" demo --keep --rows 1000 --dir "$work/demo" --json > "$work/demo.json"
{ read -r demo_bin; read -r stop_cmd; read -r port; } < <(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
print(d["server_bin"], d["stop_command"], d["databases"][0].rsplit(":", 1)[1].split("/")[0], sep="\n")
' "$work/demo.json")
export PGPASSFILE="$work/demo/pgpass" PGHOST=127.0.0.1 PGPORT="$port" PGUSER=postgres
psql() { "$demo_bin/psql" -X -q -v ON_ERROR_STOP=1 "$@"; }
psql -d app-core -c "
CREATE TABLE events AS
  SELECT g AS id,
         timestamptz '2026-01-01' - g * interval '1 second' AS at,
         md5(g::text) || repeat(' lorem ipsum', g % 20) AS note,
         (g * 1.2345)::numeric(14,4) AS amount,
         jsonb_build_object('user', g % 5000, 'kind', (ARRAY['view','click','buy'])[1 + g % 3],
                            'tags', jsonb_build_array(g % 7, md5((g * 3)::text))) AS doc,
         decode(md5(g::text) || md5((g + 1)::text), 'hex') AS raw
  FROM generate_series(1, $rows) g;
ALTER TABLE events ADD PRIMARY KEY (id);
CREATE INDEX ON events (at);
ANALYZE events;"
psql -d app-backend -c "
DO \$\$ BEGIN FOR i IN 1..200 LOOP
  EXECUTE format('CREATE TABLE small_%s (id int PRIMARY KEY, name text, at timestamptz, v numeric)', i);
  EXECUTE format('INSERT INTO small_%s SELECT g, md5(g::text), now(), g / 7.0 FROM generate_series(1, 1000) g', i);
END LOOP; END \$\$;
CREATE TABLE audit AS SELECT g AS id, md5(g::text) AS a, repeat('z', g % 100) AS b FROM generate_series(1, $((rows / 5))) g;
ANALYZE;"
dbs=(app-core app-backend)
for db in "${dbs[@]}"; do
  printf '  %-12s %s\n' "$db" "$(psql -d "$db" -At -c "SELECT pg_size_pretty(pg_database_size(current_database()))")" >&2
done

# time_of NAME CMD...: runs CMD, appends its wall time to $work/t.NAME and
# its peak RSS (KiB) to $work/m.NAME.
time_of() {
  local name="$1"; shift
  /usr/bin/time -f "%e %M %U %S" -o "$work/time.out" "$@" > "$work/out.$name"
  read -r secs rss user sys < "$work/time.out"
  echo "$secs" >> "$work/t.$name"
  echo "$rss" >> "$work/m.$name"
  python3 -c "print(round($user + $sys, 2))" >> "$work/c.$name"
}
median() { sort -n "$work/t.$1" | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
peak() { sort -n "$work/m.$1" | tail -1; }
cpu() { sort -n "$work/c.$1" | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

cat > "$work/raw_copy.py" <<'PY'
# Every table of both databases COPYed to /dev/null by JOBS workers, each a
# psql session per database running its share of the COPYs one after the
# other; tables over 64 MiB split into ctid ranges (what the server can
# produce, with dbsnap's parallelism).
import subprocess, sys, threading
psql, jobs, dbs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
work = []
for db in dbs:
    out = subprocess.run([psql, "-X", "-At", "-d", db, "-c",
        "SELECT format('%I.%I', n.nspname, c.relname), pg_table_size(c.oid), "
        "pg_relation_size(c.oid) / 8192 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')"],
        check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        name, size, pages = line.split("|")
        size, pages = int(size), int(pages)
        n = min(-(-size // (64 << 20)), max(pages, 1)) if size > (64 << 20) else 1
        for i in range(n):
            cond = []
            if i > 0: cond.append(f"ctid >= '({pages * i // n},0)'::tid")
            if i < n - 1: cond.append(f"ctid < '({pages * (i + 1) // n},0)'::tid")
            sql = f"COPY {name} TO STDOUT;" if n == 1 else f"COPY (SELECT * FROM ONLY {name} WHERE {' AND '.join(cond)}) TO STDOUT;"
            work.append((size // n, db, sql))
# Largest first, each to the least loaded worker.
work.sort(reverse=True)
load = [0] * jobs
share = [dict() for _ in range(jobs)]
for size, db, sql in work:
    w = load.index(min(load))
    load[w] += size
    share[w].setdefault(db, []).append(sql)
def run(mine):
    for db, sqls in mine.items():
        subprocess.run([psql, "-X", "-q", "-d", db], input="\n".join(sqls), text=True,
                       check=True, stdout=subprocess.DEVNULL)
threads = [threading.Thread(target=run, args=(m,)) for m in share]
for t in threads: t.start()
for t in threads: t.join()
PY

cat > "$work/truncate_restore.sh" <<SH
for db in ${dbs[*]}; do
  '$demo_bin/psql' -X -q -d "\$db" -c "DO \\\$\\\$ DECLARE r record; BEGIN FOR r IN SELECT format('%I.%I', schemaname, tablename) t FROM pg_tables WHERE schemaname = 'public' LOOP EXECUTE 'TRUNCATE ' || r.t || ' CASCADE'; END LOOP; END \\\$\\\$"
  '$demo_bin/pg_restore' --data-only --single-transaction --disable-triggers -d "\$db" '$work/z1/'"\$db".dump
done
SH

config="$work/demo/dbsnap.toml"
for run in $(seq 1 "$runs"); do
  echo "run $run/$runs" >&2
  rm -rf "$work"/z1 "$work"/fd
  if [ -n "${file:-}" ]; then rm -f "$file"; fi
  mkdir -p "$work/z1" "$work/fd"
  time_of pgdump_z1 sh -c "for db in ${dbs[*]}; do '$demo_bin/pg_dump' -Fc -Z1 -d \$db -f '$work/z1/'\$db.dump; done"
  time_of pgdump_fd sh -c "for db in ${dbs[*]}; do '$demo_bin/pg_dump' -Fd -j$jobs -Z1 -d \$db -f '$work/fd/'\$db; done"
  time_of raw_copy python3 "$work/raw_copy.py" "$demo_bin/psql" "$jobs" "${dbs[@]}"
  time_of create "$bin" --config "$config" create --target demo --no-progress --json
  file="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["file"])' "$work/out.create")"

  # Restore anchors: pg_restore -jN into new databases; TRUNCATE + data-only in one transaction.
  for db in "${dbs[@]}"; do psql -d postgres -c "DROP DATABASE IF EXISTS \"$db-pgr\""; done
  time_of pgrestore_new sh -c "for db in ${dbs[*]}; do '$demo_bin/createdb' \$db-pgr && '$demo_bin/pg_restore' -j$jobs -d \$db-pgr '$work/z1/'\$db.dump; done"
  for db in "${dbs[@]}"; do psql -d postgres -c "DROP DATABASE IF EXISTS \"$db-pgr\""; done
  time_of pgrestore_data sh "$work/truncate_restore.sh"

  time_of restore_data "$bin" --config "$config" restore --target demo --file "$file" --yes --no-safety-snapshot --no-progress --json
  time_of restore_replace "$bin" --config "$config" restore --target demo --file "$file" --drop --yes --no-safety-snapshot --no-progress --json
  "$bin" --config "$config" cleanup --target demo --yes --json > /dev/null 2>&1 || true
  time_of restore_safety "$bin" --config "$config" restore --target demo --file "$file" --yes --no-progress --json
  time_of replace_safety "$bin" --config "$config" restore --target demo --file "$file" --drop --yes --no-progress --json
  "$bin" --config "$config" cleanup --target demo --yes --json > /dev/null 2>&1 || true
done

size_z1=$(du -cb "$work"/z1/*.dump | tail -1 | cut -f1)
size_snap=$(stat -c %s "$file")
ratio() { python3 -c "print(f'{$1 / $2:.2f}x')"; }
printf '\nPostgreSQL %s, %s jobs, %s rows in events, median of %s runs\n\n' "$major" "$jobs" "$rows" "$runs"
printf '%-52s %8s %10s %9s  %s\n' "workflow" "seconds" "client cpu" "peak RSS" "ratio"
row() { printf '%-52s %8s %9ss %6s MB  %s\n' "$1" "$(median "$2")" "$(cpu "$2")" "$(( $(peak "$2") / 1024 ))" "${3:-}"; }
row "pg_dump -Fc -Z1, each database in turn" pgdump_z1
row "pg_dump -Fd -j$jobs -Z1, each database in turn" pgdump_fd
row "raw COPY of every table to /dev/null, $jobs workers" raw_copy
row "dbsnap create (defaults)" create "$(ratio "$(median create)" "$(median pgdump_z1)") of -Z1, $(ratio "$(median create)" "$(median raw_copy)") of raw"
row "pg_restore -j$jobs into new databases" pgrestore_new
row "TRUNCATE + pg_restore --data-only -1, each db" pgrestore_data
row "dbsnap restore, data-only (no safety snapshot)" restore_data "$(ratio "$(median restore_data)" "$(median pgrestore_data)")"
row "dbsnap restore --drop (replace, no safety snap.)" restore_replace "$(ratio "$(median restore_replace)" "$(median pgrestore_new)")"
row "dbsnap restore, data-only with safety snapshot" restore_safety
row "dbsnap restore --drop with safety snapshot" replace_safety "$(ratio "$(median replace_safety)" "$(median pgrestore_new)")"
printf '\nsizes: pg_dump -Fc -Z1 %s bytes, dbsnap snapshot %s bytes (%s)\n' "$size_z1" "$size_snap" "$(ratio "$size_snap" "$size_z1")"
