# services.provenix-log: a provenix transparency log (`provenixd serve`).
#
# The log runs as a systemd DynamicUser with its data (log key, SQLite database) in a
# StateDirectory, sandboxed (read-only system, no capabilities, @system-service syscalls only).
# Its server.toml is generated from `settings` and checked at build time by
# `provenixd check-config`; secrets (a PostgreSQL password) come from an EnvironmentFile outside
# the Nix store. See docs/nixos.md.
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

  cfg = config.services.provenix-log;
  settingsFormat = pkgs.formats.toml { };
  provenixd = "${cfg.package}/bin/provenixd";

  stateDirectory = lib.removePrefix "/var/lib/" cfg.dataDir;
  localDatabase = "postgres:///provenix-log?host=/run/postgresql&user=provenix-log";
  database = if cfg.database.createLocally then localDatabase else cfg.settings.database;
  port = common.listenPort cfg.settings.listen;

  # What provenixd reads: the user's settings, without unset (null) values, plus the data
  # directory this module manages.
  serverSettings = common.dropNulls (
    cfg.settings
    // {
      data = cfg.dataDir;
      inherit database;
    }
  );
  uncheckedConfig = settingsFormat.generate "provenix-log.toml" serverSettings;
  # Built only if `provenixd check-config` accepts the file: a bad setting fails the build,
  # not the service at boot.
  checkedConfig = pkgs.runCommand "provenix-log-checked.toml" {
    unchecked = uncheckedConfig;
    preferLocalBuild = true;
  } ''
    ${provenixd} check-config --config "$unchecked"
    cp "$unchecked" "$out"
  '';
  configFile = if cfg.checkConfig then checkedConfig else uncheckedConfig;

  # Installs `keyFile` (handed over by systemd as a credential) as the log key on first start,
  # and refuses to start if the data directory already holds a different key.
  installKey = pkgs.writeShellScript "provenix-log-install-key" ''
    set -eu
    key="$CREDENTIALS_DIRECTORY/log-key"
    dest=${lib.escapeShellArg "${cfg.dataDir}/log.key"}
    if [ ! -e "$dest" ]; then
      ${pkgs.coreutils}/bin/install -m 0600 "$key" "$dest.tmp"
      ${pkgs.coreutils}/bin/mv "$dest.tmp" "$dest"
    elif [ "$(< "$key")" != "$(< "$dest")" ]; then
      echo "provenix-log: $dest holds another key than services.provenix-log.keyFile; refusing to start (move one of them away)" >&2
      exit 1
    fi
  '';

  builderNames = map (k: builtins.head (lib.splitString ":" k)) cfg.builders;
  # Runs before every start, as the service user (so the database stays owned by it).
  syncBuilders = pkgs.writeShellScript "provenix-log-builders" ''
    set -eu
    ${lib.concatMapStrings (k: ''
      ${provenixd} builders add --config ${configFile} ${lib.escapeShellArg k}
    '') cfg.builders}
    ${lib.optionalString cfg.pruneBuilders ''
      keep=" ${lib.concatStringsSep " " builderNames} "
      ${provenixd} builders list --config ${configFile} | while IFS= read -r line; do
        name=''${line%%:*}
        case "$keep" in
          *" $name "*) ;;
          *) ${provenixd} builders remove --config ${configFile} "$name" ;;
        esac
      done
    ''}
  '';

  # What the admin wrapper runs in its transient unit: the service's key installation (so a
  # first `key` or `builders` before the first start cannot create another key), then provenixd.
  adminRun = pkgs.writeShellScript "provenix-log-admin-run" ''
    set -eu
    ${lib.optionalString (cfg.keyFile != null) "${installKey}"}
    exec ${provenixd} "$@"
  '';

  # `provenixd key` / `provenixd builders …` run as the log's own (dynamic) user, so that
  # database files they create are the service's, never root's.
  adminScript = pkgs.writeShellScriptBin "provenix-log-admin" ''
    set -eu
    usage() {
      echo "usage: provenix-log-admin key | builders add NAME:KEY | builders remove NAME | builders list" >&2
      exit 2
    }
    [ $# -ge 1 ] || usage
    cmd=$1; shift
    case "$cmd" in
      key) set -- key --config ${configFile} "$@" ;;
      builders)
        [ $# -ge 1 ] || usage
        sub=$1; shift
        set -- builders "$sub" --config ${configFile} "$@" ;;
      *) usage ;;
    esac
    exec ${config.systemd.package}/bin/systemd-run --quiet --pipe --wait --collect \
      --property=DynamicUser=yes --property=User=provenix-log \
      --property=StateDirectory=${stateDirectory} --property=UMask=0077 \
      ${lib.optionalString (cfg.environmentFile != null) "--property=EnvironmentFile=${toString cfg.environmentFile}"} \
      ${lib.optionalString (cfg.keyFile != null) "--property=LoadCredential=log-key:${toString cfg.keyFile}"} \
      -- ${adminRun} "$@"
  '';
in
{
  options.services.provenix-log = {
    enable = mkEnableOption "the provenix transparency log (provenixd)";

    package = mkOption {
      type = types.package;
      default = pkgs.provenix;
      defaultText = literalExpression "pkgs.provenix";
      description = "The provenix package (it provides `provenixd`).";
    };

    dataDir = mkOption {
      type = types.strMatching "/var/lib/[^/].*[^/]|/var/lib/[^/]";
      default = "/var/lib/provenix-log";
      description = ''
        Where the log keeps its signing key (`log.key`, mode 0600) and, unless a PostgreSQL
        database is configured, its SQLite database. It is the service's systemd
        StateDirectory, so it must be under /var/lib. Back it up: losing `log.key` ends the log.
      '';
    };

    settings = mkOption {
      default = { };
      description = ''
        provenixd's server.toml (see docs/server.md); any field provenixd knows may be set here.
        `data` is set from `dataDir`; secrets do not belong here (the file is in the Nix store),
        use `environmentFile`.
      '';
      type = types.submodule {
        freeformType = settingsFormat.type;
        options = {
          listen = mkOption {
            type = types.str;
            default = "127.0.0.1:8080";
            example = "[::]:8080";
            description = "Address (IP:PORT) of the log's public HTTP API.";
          };
          origin = mkOption {
            type = types.nullOr (types.strMatching "[^[:space:]+]+");
            default = null;
            example = "log.example.org/provenix";
            description = ''
              The log's name, used as checkpoint origin and key name when the log is created
              (ignored afterwards). Users list logs by this name in trust.toml, where two logs of
              the same name cannot coexist: set a unique one. Default: provenixd's
              `provenix-log`.
            '';
          };
          database = mkOption {
            type = types.nullOr types.str;
            default = null;
            example = "postgres://provenix@db.example.org/provenix";
            description = ''
              `sqlite://PATH` or `postgres://…` without a password (this file is world-readable);
              null: SQLite in `dataDir`. A URL with a password goes in `environmentFile` as
              `PROVENIX_DATABASE_URL=…`, which takes precedence.
            '';
          };
        };
      };
    };

    keyFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = "/run/secrets/provenix-log.key";
      description = ''
        An existing log signing key (`PRIVATE+KEY+NAME+ID+…`, the format of a data directory's
        `log.key`), e.g. restored from a backup or provisioned by a secret manager so that the
        log's verifier key is known before its first start. Installed as `dataDir/log.key` when
        the data directory has none; the service refuses to start if it holds a different key.
        null: provenixd creates a key on first start. Must not be in the Nix store.
      '';
    };

    environmentFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = "/run/secrets/provenix-log.env";
      description = ''
        File of `NAME=value` lines for the service's environment, read by systemd as root before
        the service starts, e.g. `PROVENIX_DATABASE_URL=postgres://provenix:secret@db/provenix`.
        Must not be in the Nix store.
      '';
    };

    database.createLocally = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Create a local PostgreSQL database `provenix-log` owned by the role `provenix-log`
        (peer authentication over /run/postgresql) and use it instead of SQLite.
      '';
    };

    builders = mkOption {
      type = types.listOf (types.strMatching common.publicKeyPattern);
      default = [ ];
      example = [ "alpha:H0W/1cdCbeB1LdR1FDuqbziaHx/Od0mxbGcC/OS/W+E=" ];
      description = ''
        Builder public keys (`NAME:BASE64`, as `provenix keygen` prints them) added to the
        log's allow-list with `provenixd builders add` before every start. A key replaces an
        earlier key of the same name. Builders added by hand stay unless `pruneBuilders` is set.
      '';
    };

    pruneBuilders = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Remove every builder not named in `builders` from the allow-list at start (their
        entries stay in the log). Makes `builders` the whole allow-list.
      '';
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open the port of `settings.listen` in the firewall.";
    };

    checkConfig = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Check the generated server.toml with `provenixd check-config` at build time. Turn off
        only when the build platform cannot run provenixd (cross compilation).
      '';
    };

    configFile = mkOption {
      type = types.path;
      readOnly = true;
      description = "The server.toml the service runs with (generated from `settings`).";
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      (common.secretFileAssertion "services.provenix-log.environmentFile" cfg.environmentFile)
      (common.secretFileAssertion "services.provenix-log.keyFile" cfg.keyFile)
      {
        assertion = !(cfg.settings ? data);
        message = "services.provenix-log.settings.data is managed by the module: set services.provenix-log.dataDir instead.";
      }
      {
        assertion = !(cfg.database.createLocally && cfg.settings.database != null);
        message = "services.provenix-log: database.createLocally and settings.database are both set; choose one.";
      }
      {
        assertion = port != null;
        message = "services.provenix-log.settings.listen = ${builtins.toJSON cfg.settings.listen} is not an IP:PORT address (e.g. 127.0.0.1:8080 or [::]:8080).";
      }
      {
        assertion = !(cfg.pruneBuilders && cfg.builders == [ ]);
        message = "services.provenix-log.pruneBuilders is set but builders is empty: every builder would be removed at each start.";
      }
    ];

    warnings = lib.optional (cfg.settings.origin == null) (
      "services.provenix-log.settings.origin is not set: the log will be named \"provenix-log\", "
      + "like every other log left unnamed, and trust.toml cannot list two logs of the same name."
    );

    services.provenix-log.configFile = configFile;

    environment.systemPackages = [ adminScript ];

    networking.firewall.allowedTCPPorts = lib.optional (cfg.openFirewall && port != null) port;

    services.postgresql = mkIf cfg.database.createLocally {
      enable = true;
      ensureDatabases = [ "provenix-log" ];
      ensureUsers = [
        {
          name = "provenix-log";
          ensureDBOwnership = true;
        }
      ];
    };

    systemd.services.provenix-log = {
      description = "provenix transparency log (provenixd)";
      documentation = [ "https://github.com/provenix/provenix/blob/main/docs/nixos.md" ];
      wantedBy = [ "multi-user.target" ];
      # With a local database: after PostgreSQL and its role/database setup (a separate unit,
      # grouped under postgresql.target, on recent NixOS; ordering on a missing unit is a no-op).
      wants = [ "network-online.target" ] ++ lib.optional cfg.database.createLocally "postgresql.target";
      after =
        [ "network-online.target" ]
        ++ lib.optionals cfg.database.createLocally [
          "postgresql.service"
          "postgresql.target"
        ];
      requires = lib.optional cfg.database.createLocally "postgresql.service";
      restartTriggers = [ configFile ];
      environment.PROVENIX_LOG = lib.mkDefault "info";

      serviceConfig = common.hardening // common.bindPrivileges port // {
        ExecStartPre =
          lib.optional (cfg.keyFile != null) installKey
          ++ lib.optional (cfg.builders != [ ] || cfg.pruneBuilders) syncBuilders;
        LoadCredential = lib.optional (cfg.keyFile != null) "log-key:${toString cfg.keyFile}";
        ExecStart = "${provenixd} serve --config ${configFile}";
        EnvironmentFile = lib.optional (cfg.environmentFile != null) (toString cfg.environmentFile);
        Restart = "on-failure";
        RestartSec = 5;
        # provenixd drains its sequencer on SIGTERM; give it time to finish a batch.
        TimeoutStopSec = 60;

        DynamicUser = true;
        User = "provenix-log";
        StateDirectory = stateDirectory;
        StateDirectoryMode = "0700";
        WorkingDirectory = cfg.dataDir;
        ProcSubset = "pid";
        SystemCallFilter = [
          "@system-service"
          "~@privileged"
          "~@resources"
        ];
        LimitNOFILE = 65536;
      };
    };
  };
}
