# Evaluates a NixOS configuration (a list of modules) with the stand-in module system and fake
# pkgs: { config; options; failedAssertions; warnings; }.
{ modules }:
let
  lib = import ./lib.nix;
  pkgs = import ./pkgs.nix { inherit lib; };
  eval = lib.evalModules {
    modules = [ ./nixos.nix ] ++ modules;
    specialArgs = { inherit pkgs; };
  };
in
{
  inherit (eval) config options;
  inherit lib pkgs;
  failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) eval.config.assertions);
  inherit (eval.config) warnings;
}
