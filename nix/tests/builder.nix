# NixOS VM test of services.provenix-builder: a local build runs the post-build-hook, the pusher
# delivers the entry to the log, a log outage loses nothing, and the hook never fails a build.
# Run by the flake's checks (x86_64-linux): nix build .#checks.x86_64-linux.vm-builder
{ pkgs, module }:
let
  common = import ./vm-common.nix { inherit (pkgs) lib; };
in
pkgs.testers.runNixOSTest {
  name = "provenix-builder";
  defaults.imports = [ module ];
  nodes = {
    log = common.logMachine;
    builder = common.builderMachine;
  };

  testScript = ''
    def build(name, text):
        return builder.succeed(
            f"nix-build --no-out-link /etc/provenix-test/drv.nix --argstr name {name} --argstr text {text}"
        ).strip()

    def in_log(out):
        h = out.removeprefix("/nix/store/").split("-")[0]
        return f"curl -sf http://127.0.0.1:8080/v1/lookup/{h} | grep -q alpha"

    start_all()
    log.wait_for_unit("provenix-log.service")
    log.wait_for_open_port(8080)
    builder.wait_for_unit("provenix-push.service")

    with subtest("nix.conf runs the provenix hook"):
        builder.succeed("grep -q '^post-build-hook = /nix/store/.*provenix-post-build-hook$' /etc/nix/nix.conf")

    with subtest("a local build is recorded in the log"):
        out = build("provenix-vm-a", "a")
        log.wait_until_succeeds(in_log(out), timeout=120)

    with subtest("the spool is root's alone and drains"):
        builder.succeed("test \"$(stat -c '%U %a' /var/lib/provenix-builder/spool)\" = 'root 700'")
        builder.wait_until_succeeds("test -z \"$(ls -A /var/lib/provenix-builder/spool/incoming)\"", timeout=60)

    with subtest("a log outage loses nothing"):
        log.systemctl("stop provenix-log.service")
        out = build("provenix-vm-b", "b")
        builder.sleep(5)
        log.systemctl("start provenix-log.service")
        log.wait_for_open_port(8080)
        log.wait_until_succeeds(in_log(out), timeout=180)

    with subtest("the hook never fails a build, even without its spool"):
        builder.systemctl("stop provenix-push.service")
        builder.succeed("mv /var/lib/provenix-builder/spool /var/lib/provenix-builder/spool.away")
        build("provenix-vm-c", "c")
        builder.succeed("mv /var/lib/provenix-builder/spool.away /var/lib/provenix-builder/spool")
        builder.systemctl("start provenix-push.service")

    print(builder.succeed("systemd-analyze security provenix-push.service --no-pager"))
  '';
}
