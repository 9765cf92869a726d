# Shared pieces of the NixOS VM tests (log.nix, builder.nix, substituter.nix): test-only keys
# and the machines each test reuses. The keys in ./keys are public test fixtures; they are
# installed as /etc files with mode 0600 (copied, not symlinked into the store) so that the
# modules' "secret not in the store" assertions hold as on a real machine.
{ lib }:
let
  read = name: lib.removeSuffix "\n" (builtins.readFile (./keys + "/${name}"));
  secret = name: {
    source = ./keys + "/${name}";
    mode = "0600";
  };
in
rec {
  keys = {
    alphaPub = read "alpha.pub";
    betaPub = read "beta.pub";
    clientPub = read "client.pub";
    logVerifier = read "log.vkey";
  };

  # Trivial derivations the builder builds with its own Nix (no nixpkgs, no network):
  # `nix-build /etc/provenix-test/drv.nix --argstr name N --argstr text T`.
  drvFile = {
    text = ''
      { name, text }:
      derivation {
        inherit name text;
        system = builtins.currentSystem;
        builder = "/bin/sh";
        args = [ "-c" "echo $text > $out" ];
      }
    '';
  };

  # A log named log.test with a provisioned key (so its verifier key is known here) and the
  # builder alpha on its allow-list, reachable from the other machines.
  logMachine =
    { pkgs, ... }:
    {
      environment.etc."provenix-test/log.key" = secret "log.key";
      environment.systemPackages = [ pkgs.curl ];
      services.provenix-log = {
        enable = true;
        keyFile = "/etc/provenix-test/log.key";
        builders = [ keys.alphaPub ];
        openFirewall = true;
        settings = {
          listen = "0.0.0.0:8080";
          origin = "log.test";
        };
      };
    };

  # Builder alpha: records its builds in the log, and serves its store as an ordinary binary
  # cache (nix-serve) that the substituter may use as upstream.
  builderMachine =
    { lib, ... }:
    {
      environment.etc."provenix-test/alpha.sec" = secret "alpha.sec";
      environment.etc."provenix-test/drv.nix" = drvFile;
      services.provenix-builder = {
        enable = true;
        keyFile = "/etc/provenix-test/alpha.sec";
        settings.logs = [ "http://log:8080" ];
      };
      services.nix-serve = {
        enable = true;
        openFirewall = true;
      };
      # Offline: build everything locally, never try cache.nixos.org.
      nix.settings.substituters = lib.mkForce [ ];
    };
}
