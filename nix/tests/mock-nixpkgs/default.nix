# A mock of nixpkgs' top level, just enough to evaluate flake.nix's outputs offline (see
# ../flake-outputs.nix): the stand-in lib and fake pkgs, plus callPackage with `override`,
# rustPlatform.buildRustPackage and testers.runNixOSTest returning descriptions of what they
# were asked to build, and overlays applied as nixpkgs applies them (final/prev fixpoint).
{
  system,
  overlays ? [ ],
}:
let
  lib = import ./lib.nix;
  fakePkgs = import ../stand-in/pkgs.nix { inherit lib; };

  # A description that can be overridden like a mkDerivation result.
  mkDrv =
    attrs:
    let
      drv = fakePkgs.writeText "${attrs.pname}-${attrs.version}" (builtins.toJSON (removeAttrs attrs [ "src" "meta" "passthru" "cargoLock" ]));
    in
    attrs
    // (attrs.passthru or { })
    // {
      inherit (drv) type outPath drvPath;
      name = "${attrs.pname}-${attrs.version}";
      overrideAttrs = f: mkDrv (attrs // f attrs);
    };

  base =
    final:
    fakePkgs
    // {
      inherit lib;
      stdenv.hostPlatform.system = system;
      callPackage =
        fn: args:
        let
          f = if builtins.isFunction fn then fn else import fn;
          auto = builtins.intersectAttrs (builtins.functionArgs f) final;
          result = f (auto // args);
        in
        result
        // {
          override = more: final.callPackage fn (args // more);
        };
      rustPlatform.buildRustPackage = mkDrv;
      testers.runNixOSTest = test: {
        type = "nixos-test";
        inherit (test) name testScript;
        nodeNames = builtins.attrNames test.nodes;
        inherit (test) defaults;
      };
      pkg-config = fakePkgs.writeText "pkg-config-0.29.2" "";
      tpm2-tss = fakePkgs.writeText "tpm2-tss-4.1.3" "";
      rustfmt = fakePkgs.writeText "rustfmt-1.85.0" "";
    };
in
lib.fix (final: builtins.foldl' (prev: overlay: prev // overlay final prev) (base final) overlays)
