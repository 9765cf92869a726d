#!/usr/bin/env bash
# Runs the libFuzzer targets of fuzz/ (docs/fuzzing.md):
#   scripts/fuzz.sh [SECONDS] [TARGET...]
# Builds every target, builds the seed corpus (fuzz/make_corpus.py: fuzz/seeds/, core's narinfo
# fixtures, ../shared/vectors when present), then runs each TARGET (default: all) for SECONDS
# (default 600), one at a time on one core, and prints per target the executions, exec/s and
# libFuzzer's final coverage (cov: edges, ft: features) and corpus size. Fails if any target
# crashed, leaked, timed out or ran out of memory; the input is kept in fuzz/artifacts/TARGET/
# and the log in fuzz/logs/TARGET.log.
#
# Toolchain: nightly with AddressSanitizer when a nightly toolchain is installed; otherwise the
# stable toolchain without sanitizer (`-s none` needs no nightly feature). FUZZ_TOOLCHAIN=
# stable|nightly forces one. Installs cargo-fuzz when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${1:-600}
shift || true
case "$SECS" in '' | 0 | *[!0-9]*) echo "usage: $0 [SECONDS] [TARGET...]" >&2; exit 2 ;; esac

say() { printf '\n==> %s\n' "$*"; }

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  say "installing cargo-fuzz"
  cargo install cargo-fuzz --locked --version 0.13.2
fi

want=${FUZZ_TOOLCHAIN:-}
if [ -z "$want" ]; then
  if cargo +nightly --version >/dev/null 2>&1; then want=nightly; else want=stable; fi
fi
if [ "$want" = nightly ]; then
  fuzz=(cargo +nightly fuzz)
  san=address
else
  fuzz=(cargo fuzz)
  san=none
fi

cd fuzz
if [ "$#" -gt 0 ]; then targets=("$@"); else mapfile -t targets < <("${fuzz[@]}" list); fi
say "building ${#targets[@]} fuzz targets ($want, sanitizer $san)"
build_start=$SECONDS
"${fuzz[@]}" build -O -s "$san"
echo "built in $((SECONDS - build_start)) s"
python3 make_corpus.py "${targets[@]}"
mkdir -p logs

failed=()
summary=()
for t in "${targets[@]}"; do
  say "fuzzing $t for $SECS s"
  log=logs/$t.log
  rc=0
  "${fuzz[@]}" run -O -s "$san" "$t" "corpus/$t" -- \
    -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    >"$log" 2>&1 || rc=$?
  done_line=$(grep -a -E '^#[0-9]+[[:space:]]+(DONE|pulse|NEW|REDUCE|INITED)' "$log" | tail -n 1 || true)
  execs=$(sed -n 's/^stat::number_of_executed_units:[[:space:]]*//p' "$log" | tail -n 1)
  rate=$(sed -n 's/^stat::average_exec_per_sec:[[:space:]]*//p' "$log" | tail -n 1)
  rss=$(sed -n 's/^stat::peak_rss_mb:[[:space:]]*//p' "$log" | tail -n 1)
  cov=$(sed -nE 's/.* cov: ([0-9]+) .*/\1/p' <<<"$done_line")
  ft=$(sed -nE 's/.* ft: ([0-9]+) .*/\1/p' <<<"$done_line")
  corp=$(sed -nE 's/.* corp: ([0-9]+\/[0-9]+[a-zA-Z]*) .*/\1/p' <<<"$done_line")
  line=$(printf '%-15s execs %-10s exec/s %-7s cov %-6s ft %-6s corpus %-12s rss %sMB' \
    "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "${rss:-?}")
  if [ "$rc" -ne 0 ]; then
    line="$line  FAILED (exit $rc, see fuzz/$log, fuzz/artifacts/$t/)"
    failed+=("$t")
    grep -m 5 -E "panicked at|ERROR: libFuzzer|SUMMARY" "$log" || true
  fi
  echo "$line"
  summary+=("$line")
done

say "summary ($SECS s per target, $(date -u +%Y-%m-%dT%H:%MZ))"
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzzing failed: ${failed[*]}" >&2
  exit 1
fi
