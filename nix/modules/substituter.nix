# services.provenix-substituter: the quorum substituter as a service, and Nix pointed at it.
#
# `provenix substituter` serves a cache path only when a k-of-n quorum of the builders listed in
# trust.toml agree on its content, and signs what it serves with a local key. Nix accepts a path
# carrying any one trusted signature, so the quorum holds only if this proxy is the only
# substituter and its key the only trusted key: by default (`exclusive = true`) the module sets
# `nix.settings.substituters`, `trusted-public-keys` and `trusted-substituters` with mkForce,
# and `narinfo-cache-negative-ttl = 0` so a path that reaches its quorum later is seen at once.
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
    mkForce
    types
    literalExpression
    ;
  common = import ./common.nix { inherit lib; };

  cfg = config.services.provenix-substituter;
  settingsFormat = pkgs.formats.toml { };
  provenix = "${cfg.package}/bin/provenix";

  unit = "provenix-substituter";
  stateDir = "/var/lib/${unit}";
  # systemd hands the key to the (dynamic) service user here (LoadCredential).
  signingKeyCredential = "/run/credentials/${unit}.service/signing-key";
  port = common.listenPort cfg.settings.substituter.listen;

  # What the final nix.conf would trust besides this substituter and its key (must be nothing
  # when `exclusive`): checked on the merged values, so a second mkForce elsewhere is caught too.
  bypasses =
    let
      s = config.nix.settings;
    in
    lib.filterAttrs (_: v: v != [ ]) {
      substituters = builtins.filter (u: u != cfg.url) s.substituters;
      trusted-public-keys = builtins.filter (k: k != cfg.publicKey) s.trusted-public-keys;
      inherit (s) trusted-substituters;
      extra-substituters = s.extra-substituters or [ ];
      extra-trusted-public-keys = s.extra-trusted-public-keys or [ ];
      extra-trusted-substituters = s.extra-trusted-substituters or [ ];
    };

  # A table type that also takes any other field (the program rejects unknown ones).
  table =
    options:
    types.submodule {
      freeformType = settingsFormat.type;
      inherit options;
    };

  # trust.toml of the service: the user's settings plus the key and state paths it manages.
  serviceSettings = common.dropNulls (
    cfg.settings
    // {
      substituter = cfg.settings.substituter // {
        signing-key-file = signingKeyCredential;
        state-file = "${stateDir}/checkpoints.json";
      };
    }
  );
  # trust.toml for people running `provenix verify|audit --config /etc/provenix/trust.toml`:
  # the same logs, builders and policy, without the service's [substituter] section (whose key
  # and state belong to the service user).
  cliSettings = common.dropNulls (removeAttrs cfg.settings [ "substituter" ]);

  checked =
    name: settings:
    let
      unchecked = settingsFormat.generate "${name}.toml" settings;
    in
    if cfg.checkConfig then
      pkgs.runCommand "${name}-checked.toml" {
        inherit unchecked;
        preferLocalBuild = true;
      } ''
        ${provenix} check-config --config "$unchecked"
        cp "$unchecked" "$out"
      ''
    else
      unchecked;
  configFile = checked "provenix-substituter" serviceSettings;
  cliConfigFile = checked "provenix-trust" cliSettings;
in
{
  options.services.provenix-substituter = {
    enable = mkEnableOption "the provenix quorum substituter, as the only substituter of this machine's Nix";

    package = mkOption {
      type = types.package;
      default = pkgs.provenix;
      defaultText = literalExpression "pkgs.provenix";
      description = "The provenix package (it provides `provenix`).";
    };

    settings = mkOption {
      default = { };
      description = ''
        trust.toml (DESIGN §7): the logs to consult, the builders trusted to vote, the policy and
        the `[substituter]` section. Nix lists of attribute sets become arrays of tables
        (`[[log]]`, `[[builder]]`). `substituter.signing-key-file` and
        `substituter.state-file` are set by the module.
      '';
      type = table {
        log = mkOption {
          type = types.listOf (table {
            url = mkOption {
              type = types.str;
              example = "https://log.example.org";
              description = "Base URL of the log's HTTP API.";
            };
            key = mkOption {
              type = types.str;
              example = "log.example.org+1a2b3c4d+AbC…";
              description = "The log's C2SP note verifier key (`provenix-log-admin key` on the log).";
            };
          });
          default = [ ];
          description = "The logs to consult (`[[log]]`, at least one).";
        };
        builder = mkOption {
          type = types.listOf (table {
            name = mkOption {
              type = types.strMatching common.keyNamePattern;
              description = "The builder's key name.";
            };
            key = mkOption {
              type = types.strMatching common.publicKeyPattern;
              description = "The builder's public key, `NAME:BASE64`.";
            };
            operator = mkOption {
              type = types.nullOr (types.strMatching common.keyNamePattern);
              default = null;
              description = "Who runs the builder; a threshold naming the operator counts its builders once.";
            };
          });
          default = [ ];
          description = "The builders trusted to vote (`[[builder]]`).";
        };
        policy = mkOption {
          description = "The decision rules (`[policy]`).";
          type = table {
            threshold = mkOption {
              type = types.str;
              example = "2 of [alpha, beta, gamma]";
              description = "Who must agree: `K of [..]`, `all of [..]`, `any of [..]`, nested.";
            };
            dissent = mkOption {
              type = types.nullOr (
                types.enum [
                  "veto"
                  "ignore"
                ]
              );
              default = null;
              description = "`veto`: any trusted builder claiming another output rejects the path; `ignore`: K agreeing suffice. Default: provenix's (veto).";
            };
          };
        };
        substituter = mkOption {
          default = { };
          description = "The `[substituter]` section.";
          type = table {
            listen = mkOption {
              type = types.str;
              default = "127.0.0.1:37515";
              description = "Where the substituter listens (IP:PORT); Nix reaches it at `url`.";
            };
            upstreams = mkOption {
              type = types.listOf types.str;
              default = [ "https://cache.nixos.org" ];
              description = "Ordinary Nix binary caches holding the NARs, tried in order.";
            };
          };
        };
      };
    };

    signingKeyFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = "/var/lib/secrets/provenix-substituter.sec";
      description = ''
        The local Nix secret key the substituter signs what it serves with (`provenix keygen
        NAME --secret-file … --public-file …`). systemd passes it to the service as a
        credential, so it may stay root-owned and mode 0600. Must not be in the Nix store.
      '';
    };

    publicKey = mkOption {
      type = types.nullOr (types.strMatching common.publicKeyPattern);
      default = null;
      example = "my-laptop-provenix:Ux1+tBFtGz6v0y4cKq7uBt3TCdi6cn1vhWd3N8hNSg0=";
      description = ''
        The public half of `signingKeyFile` (`NAME:BASE64`): the key Nix trusts.
      '';
    };

    url = mkOption {
      type = types.str;
      default = common.localUrl cfg.settings.substituter.listen;
      defaultText = literalExpression ''"http://''${settings.substituter.listen}" (wildcards as loopback)'';
      description = "The URL Nix substitutes from.";
    };

    exclusive = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Make the substituter Nix's only substituter, its key the only trusted key, and allow no
        other substituter for untrusted users (mkForce on `nix.settings.substituters`,
        `trusted-public-keys` and `trusted-substituters`). With `false` they are only added to,
        and any other trusted cache bypasses the quorum. Users in `trusted-users` can always
        name other substituters on the command line.
      '';
    };

    checkConfig = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Check the generated trust.toml files with `provenix check-config` at build time. Turn
        off only when the build platform cannot run provenix (cross compilation).
      '';
    };

    configFile = mkOption {
      type = types.path;
      readOnly = true;
      description = "The trust.toml the service runs with (generated from `settings`).";
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.signingKeyFile != null;
        message = "services.provenix-substituter.signingKeyFile must be set: create a key with `provenix keygen NAME --secret-file FILE.sec --public-file FILE.pub` and set publicKey to the content of FILE.pub.";
      }
      (common.secretFileAssertion "services.provenix-substituter.signingKeyFile" cfg.signingKeyFile)
      {
        assertion = cfg.publicKey != null;
        message = "services.provenix-substituter.publicKey must be set to the public half of signingKeyFile (NAME:BASE64).";
      }
      {
        assertion = port != null;
        message = "services.provenix-substituter.settings.substituter.listen = ${builtins.toJSON cfg.settings.substituter.listen} is not an IP:PORT address.";
      }
      {
        assertion = !(cfg.settings.substituter ? signing-key-file || cfg.settings.substituter ? state-file);
        message = "services.provenix-substituter.settings.substituter.signing-key-file and .state-file are managed by the module: set services.provenix-substituter.signingKeyFile instead.";
      }
      {
        assertion = !cfg.exclusive || bypasses == { };
        message = "services.provenix-substituter.exclusive is set, but nix.conf would also trust other caches, which bypass the quorum: ${
          lib.concatStringsSep "; " (lib.mapAttrsToList (n: v: "${n} = ${builtins.toJSON v}") bypasses)
        }. Remove these definitions (another module may use mkForce too), or set exclusive = false.";
      }
    ];

    warnings = lib.optional (!cfg.exclusive) (
      "services.provenix-substituter.exclusive = false: every other substituter whose key Nix "
      + "trusts can serve paths without the quorum."
    );

    services.provenix-substituter.configFile = configFile;

    environment.etc."provenix/trust.toml".source = cliConfigFile;

    nix.settings = {
      substituters = if cfg.exclusive then mkForce [ cfg.url ] else [ cfg.url ];
      trusted-public-keys =
        let
          keys = lib.optional (cfg.publicKey != null) cfg.publicKey;
        in
        if cfg.exclusive then mkForce keys else keys;
      trusted-substituters = mkIf cfg.exclusive (mkForce [ ]);
      # Nix remembers a 404 for an hour by default; a path that reaches its quorum later must be
      # seen on the next build.
      narinfo-cache-negative-ttl = 0;
    };

    systemd.services.${unit} = {
      description = "provenix quorum substituter";
      documentation = [ "https://github.com/provenix/provenix/blob/main/docs/nixos.md" ];
      wantedBy = [ "multi-user.target" ];
      # It listens on loopback and reaches logs and upstreams per request: it need not wait for
      # the network to be online, and nix-daemon (which fetches from it) need not either.
      after = [ "network.target" ];
      before = [ "nix-daemon.service" ];
      restartTriggers = [ configFile ];
      environment.PROVENIX_LOG = lib.mkDefault "info";

      serviceConfig = common.hardening // common.bindPrivileges port // {
        ExecStart = "${provenix} substituter --config ${configFile}";
        LoadCredential = [ "signing-key:${toString cfg.signingKeyFile}" ];
        # Nix gives up on a substituter that refuses connections: come back quickly.
        Restart = "always";
        RestartSec = 1;

        DynamicUser = true;
        User = unit;
        StateDirectory = unit;
        StateDirectoryMode = "0700";
        WorkingDirectory = stateDir;
        ProcSubset = "pid";
        SystemCallFilter = [
          "@system-service"
          "~@privileged"
          "~@resources"
        ];
      };
    };
  };
}
