# NixOS VM test of services.provenix-log: the log on SQLite and on a local PostgreSQL, with a
# provisioned key, builders from the module, the admin wrapper, the firewall and the key guard.
# Run by the flake's checks (x86_64-linux): nix build .#checks.x86_64-linux.vm-log
{ pkgs, module }:
let
  common = import ./vm-common.nix { inherit (pkgs) lib; };
  inherit (common) keys;
in
pkgs.testers.runNixOSTest {
  name = "provenix-log";
  defaults.imports = [ module ];
  nodes = {
    log = common.logMachine;
    logpg = {
      imports = [ common.logMachine ];
      services.provenix-log.database.createLocally = true;
    };
    client =
      { pkgs, ... }:
      {
        environment.systemPackages = [ pkgs.curl ];
      };
  };

  testScript = ''
    start_all()
    vkey = "${keys.logVerifier}"

    for m in (log, logpg):
        m.wait_for_unit("provenix-log.service")
        m.wait_for_open_port(8080)

        with subtest(f"{m.name}: the log signs with the provisioned key"):
            cp = m.succeed("curl -sf http://127.0.0.1:8080/checkpoint")
            assert cp.startswith("log.test\n"), cp
            assert m.succeed("provenix-log-admin key").strip() == vkey

        with subtest(f"{m.name}: builders from the module are allowed"):
            assert "alpha" in m.succeed("curl -sf http://127.0.0.1:8080/v1/builders")

        with subtest(f"{m.name}: the data belongs to the service's dynamic user, mode 0600"):
            m.succeed("test \"$(stat -c '%U %a' /var/lib/private/provenix-log/log.key)\" = 'provenix-log 600'")

        print(m.succeed("systemd-analyze security provenix-log.service --no-pager"))

    with subtest("logpg: the log uses the local PostgreSQL database"):
        logpg.succeed("journalctl -u provenix-log.service -o cat | grep 'listening on' | grep -qi postgres")

    with subtest("the firewall lets other machines reach the log"):
        client.succeed("curl -sf http://log:8080/checkpoint")

    with subtest("provenix-log-admin changes the allow-list as the service user; the server sees it"):
        log.succeed("provenix-log-admin builders add ${keys.betaPub}")
        log.wait_until_succeeds("curl -sf http://127.0.0.1:8080/v1/builders | grep -q beta", timeout=10)
        log.systemctl("restart provenix-log.service")
        log.wait_for_open_port(8080)
        log.succeed("curl -sf http://127.0.0.1:8080/v1/builders | grep -q beta")

    with subtest("a data directory holding another key than keyFile stops the start"):
        log.systemctl("stop provenix-log.service")
        log.succeed("cp /var/lib/private/provenix-log/log.key /root/log.key")
        log.succeed("echo PRIVATE+KEY+other+00000000+AAAA > /var/lib/private/provenix-log/log.key")
        log.fail("systemctl start provenix-log.service")
        log.succeed("journalctl -u provenix-log.service -o cat | grep -q 'holds another key'")
        log.succeed("cp /root/log.key /var/lib/private/provenix-log/log.key")
        log.succeed("systemctl reset-failed provenix-log.service")
        log.systemctl("start provenix-log.service")
        log.wait_for_open_port(8080)
  '';
}
