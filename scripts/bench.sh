#!/usr/bin/env bash
# Runs one of the benchmarks that print the issues' figures, on a clean machine:
#   ./scripts/bench.sh ingest --backend both      ./scripts/bench.sh substituter
#   ./scripts/bench.sh attest                     ./scripts/bench.sh --help
# Installs what the benchmarks need when missing (Debian packages via apt-get: Nix, nginx for
# the substituter's comparison, PostgreSQL, swtpm for the attestation benchmark), builds the
# release binaries (with the TPM producer) and runs provenix-bench with the given arguments.
# Measure on a quiet machine: the figures are CPU-bound on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

need=()
command -v nix-build   >/dev/null 2>&1 || need+=(nix-bin)
command -v nginx       >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v swtpm       >/dev/null 2>&1 || need+=(swtpm)
command -v swtpm_setup >/dev/null 2>&1 || need+=(swtpm-tools)
command -v pkg-config  >/dev/null 2>&1 || need+=(pkg-config)
[ -e /usr/include/tss2/tss2_esys.h ]    || need+=(libtss2-dev)
[ -e /usr/include/lzma.h ]              || need+=(liblzma-dev)
[ -e /usr/include/bzlib.h ]             || need+=(libbz2-dev)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
if [ "${#need[@]}" -gt 0 ]; then
  printf '==> installing %s\n' "${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Debian puts nginx in /usr/sbin, which a non-root PATH may lack.
case ":$PATH:" in *:/usr/sbin:*) ;; *) export PATH="$PATH:/usr/sbin" ;; esac

cargo build --release --workspace --bins --features provenix-bench/tpm --quiet
exec ./target/release/provenix-bench "$@"
