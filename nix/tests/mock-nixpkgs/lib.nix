# The stand-in lib plus the few nixpkgs lib functions flake.nix and nix/package.nix use.
let
  lib = import ../stand-in/lib.nix;
in
lib
// {
  fix =
    f:
    let
      x = f x;
    in
    x;
  cleanSource = src: src;
  # The filtered source, with its filter kept for the tests to apply.
  cleanSourceWith =
    {
      src,
      filter ? (_: _: true),
      name ? "source",
    }:
    {
      inherit src filter name;
      outPath = toString src;
    };
  importTOML = path: builtins.fromTOML (builtins.readFile path);
  licenses.asl20 = {
    spdxId = "Apache-2.0";
  };
  platforms.linux = [
    "x86_64-linux"
    "aarch64-linux"
  ];
}
