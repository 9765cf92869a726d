# services.provenix-builder: record every local build and push its provenance to provenix logs.
#
# Two halves (DESIGN §9):
# - `nix.settings.post-build-hook` runs `provenix hook` inside nix-daemon (as root) after every
#   local build: it appends one record to the spool and exits 0 in milliseconds, whatever
#   happens, so a build never waits for or fails because of provenix.
# - the `provenix-push` service drains the spool: it queries the store through nix-daemon, signs
#   one entry per build with the builder key and submits them to every log, retrying until each
#   log acknowledged.
#
# Permissions: the hook runs as root and creates root-owned, mode-0600 spool records, so the
# pusher runs as root too, but stripped: no capabilities at all (it can open only root's own
# files and world-readable ones), a read-only system except its StateDirectory, no new
# privileges. The spool is /var/lib/provenix-builder/spool (mode 0700, root), created at boot by
# tmpfiles so the hook can record builds before the pusher first started.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib)
    mkOption
    mkEnableOption
    mkIf
    types
    literalExpression
    ;
  common = import ./common.nix { inherit lib; };

  cfg = config.services.provenix-builder;
  settingsFormat = pkgs.formats.toml { };
  provenix = "${cfg.package}/bin/provenix";

  stateDir = "/var/lib/provenix-builder";
  spool = "${stateDir}/spool";

  builderSettings = common.dropNulls (
    cfg.settings
    // {
      key-file = if cfg.keyFile == null then null else toString cfg.keyFile;
      inherit spool;
    }
  );
  uncheckedConfig = settingsFormat.generate "provenix-builder.toml" builderSettings;
  # `provenix check-config` validates the file without reading the key (a secret that exists only
  # on the target machine), so it runs in the build sandbox.
  checkedConfig = pkgs.runCommand "provenix-builder-checked.toml" {
    unchecked = uncheckedConfig;
    preferLocalBuild = true;
  } ''
    ${provenix} check-config --config "$unchecked"
    cp "$unchecked" "$out"
  '';
  configFile = if cfg.checkConfig then checkedConfig else uncheckedConfig;

  hook = pkgs.writeShellScript "provenix-post-build-hook" ''
    export PROVENIX_CONFIG=${configFile}
    ${
      if cfg.extraHookCommands == "" then
        "exec ${provenix} hook"
      else
        ''
          ${provenix} hook
          ${cfg.extraHookCommands}
        ''
    }
  '';

  # A TPM reached as a device node (`tcti = "device:/dev/tpmrm0"`) must be visible to the pusher.
  tcti = (cfg.settings.tpm or { }).tcti or null;
  tpmDevice =
    let
      m = if tcti == null then null else builtins.match "device:(/dev/.+)" tcti;
    in
    if m == null then null else builtins.head m;
in
{
  options.services.provenix-builder = {
    enable = mkEnableOption "provenance recording of every local Nix build (provenix hook and push)";

    package = mkOption {
      type = types.package;
      default = pkgs.provenix;
      defaultText = literalExpression "pkgs.provenix";
      description = "The provenix package (it provides `provenix`).";
    };

    keyFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = "/var/lib/provenix-builder/alpha.sec";
      description = ''
        The builder's secret key in Nix's binary-cache key format (`provenix keygen NAME
        --secret-file … --public-file …`, or `nix-store --generate-binary-cache-key`; the key
        Nix already signs with in `secret-key-files` may be reused). Its name is the builder's
        name in logs and trust files. Read only by the pusher, as root: keep it mode 0600, owned
        by root, outside the Nix store and outside /root and /home (hidden from the service).
      '';
    };

    settings = mkOption {
      default = { };
      description = ''
        builder.toml (DESIGN §11): `logs` plus any field provenix knows, e.g.
        `source = { uri = "git+https://github.com/NixOS/nixpkgs"; ref = "nixos-24.11"; }`,
        `[push]` tunables, or `tpm.tcti`. `key-file` and `spool` are set by the module.
      '';
      type = types.submodule {
        freeformType = settingsFormat.type;
        options.logs = mkOption {
          type = types.listOf types.str;
          default = [ ];
          example = [ "https://log.example.org" ];
          description = "Base URLs of the logs every entry is pushed to (at least one).";
        };
      };
    };

    extraHookCommands = mkOption {
      type = types.lines;
      default = "";
      example = ''
        /run/current-system/sw/bin/nix copy --to s3://my-cache $OUT_PATHS
      '';
      description = ''
        Shell commands run in the post-build-hook after `provenix hook` (Nix has a single
        post-build-hook). They run synchronously in the build loop and a failure fails the
        build, exactly as in a hook of your own.
      '';
    };

    checkConfig = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Check the generated builder.toml with `provenix check-config` at build time. Turn off
        only when the build platform cannot run provenix (cross compilation).
      '';
    };

    configFile = mkOption {
      type = types.path;
      readOnly = true;
      description = ''
        The builder.toml the hook and the pusher use (generated from `settings`); e.g. for
        `provenix push --config … --once` by hand.
      '';
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.keyFile != null;
        message = "services.provenix-builder.keyFile must be set: create a key with `provenix keygen NAME --secret-file /var/lib/provenix-builder/NAME.sec --public-file /var/lib/provenix-builder/NAME.pub`.";
      }
      (common.secretFileAssertion "services.provenix-builder.keyFile" cfg.keyFile)
      {
        assertion = cfg.settings.logs != [ ];
        message = "services.provenix-builder.settings.logs must name at least one log URL.";
      }
      {
        assertion = !(cfg.settings ? key-file || cfg.settings ? spool);
        message = "services.provenix-builder.settings.key-file and .spool are managed by the module: set services.provenix-builder.keyFile instead.";
      }
    ];

    services.provenix-builder.configFile = configFile;

    nix.settings.post-build-hook = hook;

    systemd.tmpfiles.rules = [
      "d ${stateDir} 0700 root root - -"
      "d ${spool} 0700 root root - -"
    ];

    systemd.services.provenix-push = {
      description = "provenix: push build provenance from the spool to the logs";
      documentation = [ "https://github.com/provenix/provenix/blob/main/docs/nixos.md" ];
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [
        "network-online.target"
        "nix-daemon.socket"
      ];
      restartTriggers = [ configFile ];
      # The pusher asks nix-daemon about outputs, NAR hashes, references and closures.
      path = [ config.nix.package ];
      environment = {
        NIX_REMOTE = "daemon";
        NIX_CONFIG = "extra-experimental-features = nix-command";
        PROVENIX_LOG = lib.mkDefault "info";
        # /root is hidden (ProtectHome): whatever `nix` keeps per user goes here instead.
        HOME = stateDir;
        XDG_CACHE_HOME = "/var/cache/provenix-builder";
      };

      serviceConfig = common.hardening // {
        ExecStart = "${provenix} push --config ${configFile}";
        Restart = "always";
        RestartSec = 5;

        # root without capabilities: see the top of this file.
        User = "root";
        StateDirectory = "provenix-builder";
        StateDirectoryMode = "0700";
        CacheDirectory = "provenix-builder";
        CacheDirectoryMode = "0700";
        WorkingDirectory = stateDir;
        # `nix` raises its stack rlimit at start: keep @resources allowed.
        SystemCallFilter = [
          "@system-service"
          "~@privileged"
        ];
        PrivateDevices = tpmDevice == null;
        DeviceAllow = lib.optional (tpmDevice != null) "${tpmDevice} rw";
      };
    };
  };
}
