# Adds provenix to a nixpkgs package set: `pkgs.provenix` (both binaries, `provenix` and
# `provenixd`) and `pkgs.provenixd` (the same build; `lib.getExe` gives the server).
final: prev: {
  provenix = final.callPackage ./package.nix { };
  provenixd = final.provenix.overrideAttrs (old: {
    meta = old.meta // {
      mainProgram = "provenixd";
    };
  });
}
