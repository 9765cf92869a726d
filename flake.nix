{
  description = "provenix: a Nix binary cache that answers to evidence (provenance log, quorum substituter, auditor)";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f (import nixpkgs {
        inherit system;
        overlays = [ self.overlays.default ];
      }));

      # The plain modules take `pkgs.provenix` (from the overlay); through the flake they default
      # to this flake's build, so no overlay is needed.
      withPackage =
        file: services:
        { lib, pkgs, ... }:
        {
          _file = "${self}/flake.nix#nixosModules";
          imports = [ file ];
          config.services = lib.genAttrs services (_: {
            package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.default;
          });
        };
    in
    {
      overlays.default = import ./nix/overlay.nix;

      packages = forAllSystems (pkgs: {
        inherit (pkgs) provenix provenixd;
        provenix-tpm = pkgs.provenix.override { withTpm = true; };
        default = pkgs.provenix;
      });

      nixosModules = {
        log = withPackage ./nix/modules/log.nix [ "provenix-log" ];
        builder = withPackage ./nix/modules/builder.nix [ "provenix-builder" ];
        substituter = withPackage ./nix/modules/substituter.nix [ "provenix-substituter" ];
        default = withPackage ./nix/modules [
          "provenix-log"
          "provenix-builder"
          "provenix-substituter"
        ];
      };

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          inputsFrom = [ pkgs.provenix ];
          packages = with pkgs; [
            cargo
            rustc
            clippy
            rustfmt
            rust-analyzer
            cargo-nextest
            sqlx-cli
            pkg-config
            tpm2-tss
            tpm2-tools
            swtpm
            postgresql
            nix
            (python3.withPackages (p: [ p.securesystemslib ]))
          ];
        };
      });

      checks = forAllSystems (
        pkgs:
        let
          module = self.nixosModules.default;
          # The module evaluation of nix/tests/modules.nix (the stand-in module system, as in
          # offline CI): fails evaluation if a case does not produce what it declares.
          standIn = import ./nix/tests/modules.nix;
        in
        {
          package = pkgs.provenix;
          modules-stand-in =
            assert standIn.check;
            pkgs.runCommand "provenix-modules-stand-in" {
              cases = builtins.toJSON standIn.names;
            } ''echo "$cases" > "$out"'';
          # `cargo fmt --check` without cargo (which would want a writable home and the registry).
          fmt = pkgs.runCommand "provenix-fmt" {
            nativeBuildInputs = [ pkgs.rustfmt ];
          } ''
            find ${self} -name '*.rs' -not -path '*/target/*' -print0 \
              | xargs -0 rustfmt --check --edition 2021
            touch "$out"
          '';
        }
        // lib.optionalAttrs (pkgs.stdenv.hostPlatform.system == "x86_64-linux") {
          vm-log = import ./nix/tests/log.nix { inherit pkgs module; };
          vm-builder = import ./nix/tests/builder.nix { inherit pkgs module; };
          vm-substituter = import ./nix/tests/substituter.nix { inherit pkgs module; };
        }
      );

      formatter = forAllSystems (pkgs: pkgs.nixfmt-rfc-style);
    };
}
