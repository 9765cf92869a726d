# NixOS VM test of services.provenix-substituter, end to end: builder alpha builds and pushes to
# the log and serves its store (nix-serve); the client's Nix substitutes only through the quorum
# substituter, gets the path alpha vouched for, signed by the client's own key, and is refused
# one nobody vouched for.
# Run by the flake's checks (x86_64-linux): nix build .#checks.x86_64-linux.vm-substituter
{ pkgs, module }:
let
  common = import ./vm-common.nix { inherit (pkgs) lib; };
  inherit (common) keys;
in
pkgs.testers.runNixOSTest {
  name = "provenix-substituter";
  defaults.imports = [ module ];
  nodes = {
    log = common.logMachine;
    builder = common.builderMachine;
    client =
      { pkgs, ... }:
      {
        environment.etc."provenix-test/client.sec" = {
          source = ./keys/client.sec;
          mode = "0600";
        };
        environment.systemPackages = [ pkgs.curl ];
        services.provenix-substituter = {
          enable = true;
          signingKeyFile = "/etc/provenix-test/client.sec";
          publicKey = keys.clientPub;
          settings = {
            log = [
              {
                url = "http://log:8080";
                key = keys.logVerifier;
              }
            ];
            builder = [
              {
                name = "alpha";
                key = keys.alphaPub;
              }
            ];
            policy.threshold = "1 of [alpha]";
            substituter.upstreams = [ "http://builder:5000" ];
          };
        };
      };
  };

  testScript = ''
    import re

    def build(name, text):
        return builder.succeed(
            f"nix-build --no-out-link /etc/provenix-test/drv.nix --argstr name {name} --argstr text {text}"
        ).strip()

    def hash_part(out):
        return out.removeprefix("/nix/store/").split("-")[0]

    start_all()
    log.wait_for_unit("provenix-log.service")
    log.wait_for_open_port(8080)
    builder.wait_for_unit("provenix-push.service")
    builder.wait_for_unit("nix-serve.service")
    builder.wait_for_open_port(5000)
    client.wait_for_unit("provenix-substituter.service")
    client.wait_for_open_port(37515)

    with subtest("nix.conf trusts only the proxy and its key, and forgets 404s at once"):
        conf = client.succeed("cat /etc/nix/nix.conf")
        assert re.search(r"^substituters = http://127\.0\.0\.1:37515$", conf, re.M), conf
        assert re.search("^trusted-public-keys = " + re.escape("${keys.clientPub}") + "$", conf, re.M), conf
        assert re.search(r"^trusted-substituters =\s*$", conf, re.M), conf
        assert re.search(r"^narinfo-cache-negative-ttl = 0$", conf, re.M), conf

    with subtest("a path the quorum agrees on is substituted, signed by the local key"):
        out = build("provenix-vm-a", "a")
        log.wait_until_succeeds(f"curl -sf http://127.0.0.1:8080/v1/lookup/{hash_part(out)} | grep -q alpha", timeout=120)
        client.succeed(f"nix-store --realise {out}")
        assert client.succeed(f"cat {out}").strip() == "a"
        sigs = client.succeed(f"nix --extra-experimental-features nix-command path-info --sigs {out}")
        assert "${builtins.head (pkgs.lib.splitString ":" keys.clientPub)}:" in sigs, sigs

    with subtest("a path no trusted builder vouched for is refused with 404, so Nix cannot get it"):
        p = builder.succeed("echo unvouched > /tmp/u && nix-store --add /tmp/u").strip()
        code = client.succeed(f"curl -s -o /dev/null -w '%{{http_code}}' http://127.0.0.1:37515/{hash_part(p)}.narinfo")
        assert code == "404", code
        client.fail(f"nix-store --realise {p}")

    print(client.succeed("systemd-analyze security provenix-substituter.service --no-pager"))
  '';
}
