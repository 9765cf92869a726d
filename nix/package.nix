# provenix: `provenixd` (the log) and `provenix` (hook, push, substituter, verify, audit).
#
# Builds the Cargo workspace offline: the crates come from Cargo.lock (each a fixed-output
# fetch checked against the lock file's sha256), nothing is downloaded during the build.
# `withTpm = true` builds the TPM quote producer (cargo feature `tpm`, needs tpm2-tss).
{
  lib,
  rustPlatform,
  pkg-config,
  tpm2-tss,
  withTpm ? false,
}:
let
  root = ../.;
  workspace = lib.importTOML ../Cargo.toml;
  # Only what Cargo reads: manifests, sources, migrations (embedded by sqlx::migrate!), test
  # fixtures. Editing the Nix files, docs or CI scripts does not rebuild the package.
  excluded = [
    "target"
    "nix"
    "docs"
    "scripts"
    ".ci"
    ".config"
    "flake.nix"
    "flake.lock"
    "README.md"
  ];
  src = lib.cleanSourceWith {
    name = "provenix-source";
    src = lib.cleanSource root;
    filter =
      path: _type:
      let
        rel = lib.removePrefix "${toString root}/" (toString path);
      in
      !(lib.elem rel excluded) && !(lib.hasPrefix "result" rel);
  };
in
rustPlatform.buildRustPackage {
  pname = "provenix";
  inherit (workspace.workspace.package) version;
  inherit src;

  cargoLock.lockFile = ../Cargo.lock;

  cargoBuildFlags = [
    "--package"
    "provenix-server"
    "--package"
    "provenix"
  ];
  # `provenix/tpm`: the feature of the `provenix` member (two packages are selected); the check
  # phase selects only provenix-core, which has no such feature.
  buildFeatures = lib.optional withTpm "provenix/tpm";
  checkFeatures = [ ];

  nativeBuildInputs = lib.optional withTpm pkg-config;
  buildInputs = lib.optional withTpm tpm2-tss;

  # The full suite needs Nix, PostgreSQL, swtpm and the shared test vectors (scripts/test.sh);
  # in the sandbox run the pure core's unit tests, which need none of them.
  cargoTestFlags = [
    "--package"
    "provenix-core"
    "--lib"
  ];

  passthru = {
    inherit withTpm;
  };

  meta = {
    description = "Nix binary cache that answers to evidence: provenance log, quorum substituter, auditor";
    homepage = "https://github.com/provenix/provenix";
    license = lib.licenses.asl20;
    mainProgram = "provenix";
    platforms = lib.platforms.linux;
  };
}
