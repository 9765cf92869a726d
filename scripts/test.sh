#!/usr/bin/env bash
# The whole provenix test suite, exactly as CI runs it:
#   formatting, clippy (warnings denied), and every test with the real tools required
#   (Nix, swtpm, PostgreSQL, Python cross-checkers) -- nothing skipped -- then a short run of
#   every fuzz target (scripts/fuzz.sh).
# Installs what the tests need when missing (Debian packages via apt-get, PyPI packages in a
# venv under target/), starts a private PostgreSQL cluster for the run and stops it after.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export PROVENIX_CI="${PROVENIX_CI:-1}"

say() { printf '\n==> %s\n' "$*"; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# --- Debian packages -------------------------------------------------------------------------
need=()
command -v nix-build   >/dev/null 2>&1 || need+=(nix-bin)
command -v swtpm       >/dev/null 2>&1 || need+=(swtpm)
command -v swtpm_setup >/dev/null 2>&1 || need+=(swtpm-tools)
command -v tpm2_quote  >/dev/null 2>&1 || need+=(tpm2-tools)
command -v pkg-config  >/dev/null 2>&1 || need+=(pkg-config)
command -v chromium    >/dev/null 2>&1 || need+=(chromium)
[ -e /usr/include/tss2/tss2_esys.h ]    || need+=(libtss2-dev)
[ -e /usr/include/lzma.h ]              || need+=(liblzma-dev)   # xz NARs (substituter)
[ -e /usr/include/bzlib.h ]             || need+=(libbz2-dev)    # bzip2 NARs (substituter)
command -v python3     >/dev/null 2>&1 || need+=(python3)       # static upstream caches in tests
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)  # the Python checkers' venv
command -v c++         >/dev/null 2>&1 || need+=(g++)           # libFuzzer (fuzz smoke)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
if [ "${#need[@]}" -gt 0 ]; then
  say "installing ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# --- PostgreSQL: a private cluster on a unix socket, for this run only -------------------------
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
PGDIR=$(mktemp -d /tmp/provenix-pg.XXXXXX)
as_pg=()
if [ "$(id -u)" -eq 0 ]; then chown postgres: "$PGDIR"; as_pg=(runuser -u postgres --); fi
stop_pg() { "${as_pg[@]}" "$PGBIN/pg_ctl" -D "$PGDIR/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$PGDIR"; }
trap stop_pg EXIT
say "starting PostgreSQL ($PGBIN) in $PGDIR"
"${as_pg[@]}" "$PGBIN/initdb" -D "$PGDIR/data" -A trust -U postgres >/dev/null
"${as_pg[@]}" "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/log" -w \
  -o "-k $PGDIR -c listen_addresses='' -c max_connections=300" start >/dev/null
export PROVENIX_TEST_PG="postgres://postgres@localhost/postgres?host=$PGDIR"

# --- Python cross-checkers (securesystemslib DSSE, in-toto-attestation SLSA v1) ----------------
VENV=$ROOT/target/pyenv
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import securesystemslib, in_toto_attestation' 2>/dev/null; then
  say "installing Python checkers in $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r scripts/requirements-test.txt
fi
export PROVENIX_PYTHON=$VENV/bin/python

# --- Rust ------------------------------------------------------------------------------------
# Each crate is built once here, so no incremental caches; and the test binaries carry no debug
# info (about 30 of them, each ~120 MB with it, three quarters DWARF from std and the C
# libraries: a CI run once ran out of disk). Panic messages still name the file and line.
# Set these variables to keep debug info for a local run.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
export CARGO_PROFILE_DEV_DEBUG="${CARGO_PROFILE_DEV_DEBUG:-false}"
export CARGO_PROFILE_DEV_STRIP="${CARGO_PROFILE_DEV_STRIP:-debuginfo}"
mkdir -p target
free_mb=$(df -Pm target 2>/dev/null | awk 'NR == 2 { print $4 }' || true)
if [ "${free_mb:-0}" -lt 4000 ]; then
  echo "warning: only ${free_mb} MB free for target/; a fresh run peaks at about 2.6 GB (builds and fuzz targets)" >&2
fi
say "cargo fmt --check"
cargo fmt --all -- --check
say "cargo clippy (warnings denied)"
cargo clippy --workspace --all-targets --all-features -- -D warnings
say "rustdoc (warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps -q
say "building binaries"
cargo build --workspace --bins --all-features
say "running tests"
cargo nextest run --workspace --all-features --profile ci "$@"
cargo test --workspace --all-features --doc -q
# Fuzz smoke: every target of fuzz/ built and run briefly (docs/fuzzing.md); installs cargo-fuzz
# when missing. FUZZ_SMOKE_SECONDS sets the seconds per target; the stable toolchain (what CI has)
# unless FUZZ_TOOLCHAIN says otherwise.
say "fuzz smoke (${FUZZ_SMOKE_SECONDS:-15} s per target)"
FUZZ_TOOLCHAIN="${FUZZ_TOOLCHAIN:-stable}" scripts/fuzz.sh "${FUZZ_SMOKE_SECONDS:-15}"
say "all tests passed"
