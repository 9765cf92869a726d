# flake.nix's outputs evaluated against a mock nixpkgs (./mock-nixpkgs), offline: the packages
# and what they would build, the source filter, the overlay, the checks, and the flake's NixOS
# modules in the stand-in module system with the flake's own package. JSON-friendly; driven by
# tests/tests/nix_modules.rs.
let
  root = ../..;
  mockNixpkgs = {
    lib = import ./mock-nixpkgs/lib.nix;
    outPath = ./mock-nixpkgs;
  };
  flake = import (root + "/flake.nix");
  self = flake.outputs {
    self = self // {
      outPath = toString root;
    };
    nixpkgs = mockNixpkgs;
  };
  lib = mockNixpkgs.lib;
  evalConfig = import ./stand-in/eval.nix;

  pkgView = p: {
    inherit (p)
      name
      pname
      version
      cargoBuildFlags
      buildFeatures
      checkFeatures
      cargoTestFlags
      withTpm
      ;
    path = p.outPath;
    lockFile = toString p.cargoLock.lockFile;
    mainProgram = p.meta.mainProgram;
    nativeBuildInputs = map (d: d.name) p.nativeBuildInputs;
    buildInputs = map (d: d.name) p.buildInputs;
  };

  x86 = self.packages.x86_64-linux;
  src = x86.default.src;
  kept = rel: type: src.filter "${toString root}/${rel}" type;

  # The flake's default module with all three roles enabled, in the stand-in.
  roles =
    (evalConfig {
      modules = [
        self.nixosModules.default
        (import ./modules.nix).samples.all-roles.config
      ];
    }).config;
in
{
  systems = builtins.attrNames self.packages;
  packages = builtins.mapAttrs (_: pkgView) x86;
  source = {
    inherit (src) name;
    kept = lib.genAttrs [
      "Cargo.toml"
      "Cargo.lock"
      "core"
      "server"
      "client"
      "tests"
      "bench"
      "migrations"
    ] (rel: kept rel "directory");
    dropped = lib.genAttrs [
      "target"
      "nix"
      "docs"
      "scripts"
      "flake.nix"
      "flake.lock"
      "result"
      "result-bin"
    ] (rel: !(kept rel "directory"));
  };
  overlay = builtins.attrNames (self.overlays.default { } { });
  nixosModules = builtins.attrNames self.nixosModules;
  checks = builtins.mapAttrs (_: builtins.attrNames) self.checks;
  standInCheck = self.checks.x86_64-linux.modules-stand-in.buildCommand;
  vmTests = builtins.mapAttrs (_: t: { inherit (t) name nodeNames testScript; }) {
    inherit (self.checks.x86_64-linux) vm-log vm-builder vm-substituter;
  };
  # Each role's module alone (only its own options exist then), with the flake's package.
  singleModules =
    let
      one =
        module: sample: unit:
        (evalConfig {
          modules = [
            self.nixosModules.${module}
            (import ./modules.nix).samples.${sample}.config
          ];
        }).config.systemd.services.${unit}.serviceConfig.ExecStart;
    in
    {
      log = one "log" "log-full" "provenix-log";
      builder = one "builder" "builder" "provenix-push";
      substituter = one "substituter" "substituter" "provenix-substituter";
    };
  modulePackage = {
    log = roles.systemd.services.provenix-log.serviceConfig.ExecStart;
    push = roles.systemd.services.provenix-push.serviceConfig.ExecStart;
    substituter = roles.systemd.services.provenix-substituter.serviceConfig.ExecStart;
  };
}
