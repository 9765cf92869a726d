# provenix's NixOS modules evaluated with sample configurations in the stand-in module system
# (./stand-in), for machines without nixpkgs. Each case is a configuration and the assertion
# messages it must fail with ([] = must pass); `cases.<name>` is what the configuration produced,
# in a JSON-friendly form (fake derivations as { path; text; … }).
#
#   nix-instantiate --eval --strict --json nix/tests/modules.nix -A cases.log-minimal
#   nix-instantiate --eval --strict --json nix/tests/modules.nix -A check     # true, or throws
#
# Driven by tests/tests/nix_modules.rs (which also runs the real binaries' check-config on the
# generated files) and by the flake's `modules-stand-in` check.
let
  evalConfig = import ./stand-in/eval.nix;
  lib = import ./stand-in/lib.nix;
  key = name: lib.removeSuffix "\n" (builtins.readFile (./keys + "/${name}"));
  alphaPub = key "alpha.pub";
  clientPub = key "client.pub";
  logVerifier = key "log.vkey";
  betaPub = key "beta.pub";

  # A fake derivation (or anything else) as JSON-friendly data.
  describe =
    v:
    if builtins.isAttrs v && (v.type or null) == "derivation" then
      {
        path = v.outPath;
      }
      // lib.optionalAttrs (v ? text) { inherit (v) text; }
      // lib.optionalAttrs (v ? buildCommand) { inherit (v) buildCommand; }
      // lib.optionalAttrs (v ? unchecked) { unchecked = describe v.unchecked; }
      // lib.optionalAttrs (v ? destination) { inherit (v) destination; }
    else if builtins.isList v then
      map describe v
    else if builtins.isAttrs v then
      builtins.mapAttrs (_: describe) v
    else
      v;

  unitView = svc: {
    inherit (svc)
      description
      wantedBy
      wants
      after
      before
      requires
      environment
      ;
    path = map toString svc.path;
    serviceConfig = describe svc.serviceConfig;
    restartTriggers = describe svc.restartTriggers;
  };

  # Everything a passing configuration produced that a test may look at.
  view =
    e:
    let
      c = e.config;
      enabled = name: c.services.${name}.enable;
    in
    {
      inherit (e) failedAssertions warnings;
      services = builtins.mapAttrs (_: unitView) c.systemd.services;
      nixSettings = describe c.nix.settings;
      tmpfiles = c.systemd.tmpfiles.rules;
      firewall = c.networking.firewall.allowedTCPPorts;
      etc = builtins.mapAttrs (_: f: describe f.source) c.environment.etc;
      systemPackages = describe c.environment.systemPackages;
      postgresql = c.services.postgresql;
      configFiles =
        lib.optionalAttrs (enabled "provenix-log") { log = describe c.services.provenix-log.configFile; }
        // lib.optionalAttrs (enabled "provenix-builder") {
          builder = describe c.services.provenix-builder.configFile;
        }
        // lib.optionalAttrs (enabled "provenix-substituter") {
          substituter = describe c.services.provenix-substituter.configFile;
        };
    };

  # name -> { modules; failedAssertions = [ expected messages ]; }
  samples = {
    # ---- services.provenix-log ------------------------------------------------------------------
    log-minimal = {
      config.services.provenix-log.enable = true;
      warnings = [
        "services.provenix-log.settings.origin is not set: the log will be named \"provenix-log\", like every other log left unnamed, and trust.toml cannot list two logs of the same name."
      ];
    };
    log-full = {
      config.services.provenix-log = {
        enable = true;
        dataDir = "/var/lib/provenix/log-a";
        keyFile = "/run/secrets/provenix-log.key";
        environmentFile = "/run/secrets/provenix-log.env";
        builders = [
          alphaPub
          betaPub
        ];
        pruneBuilders = true;
        openFirewall = true;
        settings = {
          listen = "[::]:8443";
          origin = "log.example.org/provenix";
          database = "postgres://provenix@db.example.org/provenix";
          queue-depth = 512;
          integrate-interval-ms = 250;
        };
      };
    };
    log-local-postgres = {
      config.services.provenix-log = {
        enable = true;
        settings.origin = "log.example";
        database.createLocally = true;
      };
    };
    log-port-80 = {
      config.services.provenix-log = {
        enable = true;
        settings.origin = "log.example";
        settings.listen = "0.0.0.0:80";
      };
    };
    log-secret-in-store = {
      config.services.provenix-log = {
        enable = true;
        settings.origin = "log.example";
        environmentFile = "${builtins.storeDir}/0c5q9kfxlcj6xx8gb8dvwz3rpj7ik8qz-provenix.env";
        keyFile = ./keys/log.key;
      };
      failedAssertions = [
        "services.provenix-log.environmentFile = ${builtins.storeDir}/0c5q9kfxlcj6xx8gb8dvwz3rpj7ik8qz-provenix.env is in the world-readable Nix store. Give the path of a file outside the store, e.g. \"/run/secrets/provenix\"."
        "services.provenix-log.keyFile = ${toString ./keys/log.key} is a Nix path: it would be copied into the world-readable Nix store. Give the path of a file outside the store as a string, e.g. \"/run/secrets/provenix\"."
      ];
    };
    log-conflicts = {
      config.services.provenix-log = {
        enable = true;
        settings = {
          origin = "log.example";
          data = "/srv/provenix";
          database = "postgres://db/provenix";
          listen = "localhost";
        };
        database.createLocally = true;
        pruneBuilders = true;
      };
      failedAssertions = [
        "services.provenix-log.settings.data is managed by the module: set services.provenix-log.dataDir instead."
        "services.provenix-log: database.createLocally and settings.database are both set; choose one."
        "services.provenix-log.settings.listen = \"localhost\" is not an IP:PORT address (e.g. 127.0.0.1:8080 or [::]:8080)."
        "services.provenix-log.pruneBuilders is set but builders is empty: every builder would be removed at each start."
      ];
    };

    # ---- services.provenix-builder --------------------------------------------------------------
    builder = {
      config.services.provenix-builder = {
        enable = true;
        keyFile = "/var/lib/provenix-builder/alpha.sec";
        settings = {
          logs = [
            "http://log-a.example:8080"
            "https://log-b.example"
          ];
          source = {
            uri = "git+https://github.com/NixOS/nixpkgs";
            ref = "nixos-24.11";
          };
          push.batch-size = 100;
        };
      };
    };
    builder-tpm-and-extra-hook = {
      config.services.provenix-builder = {
        enable = true;
        keyFile = "/var/lib/provenix-builder/alpha.sec";
        settings.logs = [ "http://log-a.example:8080" ];
        settings.tpm.tcti = "device:/dev/tpmrm0";
        extraHookCommands = "echo built $OUT_PATHS";
      };
    };
    builder-unset = {
      config.services.provenix-builder.enable = true;
      failedAssertions = [
        "services.provenix-builder.keyFile must be set: create a key with `provenix keygen NAME --secret-file /var/lib/provenix-builder/NAME.sec --public-file /var/lib/provenix-builder/NAME.pub`."
        "services.provenix-builder.settings.logs must name at least one log URL."
      ];
    };
    builder-key-in-store = {
      config.services.provenix-builder = {
        enable = true;
        keyFile = "${builtins.storeDir}/9ynp5kq1dz4pmb4jn0r5rkhv0gqk3nmm-alpha.sec";
        settings.logs = [ "http://log-a.example:8080" ];
        settings.spool = "/tmp/spool";
      };
      failedAssertions = [
        "services.provenix-builder.keyFile = ${builtins.storeDir}/9ynp5kq1dz4pmb4jn0r5rkhv0gqk3nmm-alpha.sec is in the world-readable Nix store. Give the path of a file outside the store, e.g. \"/run/secrets/provenix\"."
        "services.provenix-builder.settings.key-file and .spool are managed by the module: set services.provenix-builder.keyFile instead."
      ];
    };

    # ---- services.provenix-substituter ----------------------------------------------------------
    substituter = {
      config.services.provenix-substituter = {
        enable = true;
        signingKeyFile = "/var/lib/secrets/provenix-substituter.sec";
        publicKey = clientPub;
        settings = {
          log = [
            {
              url = "http://log-a.example:8080";
              key = logVerifier;
            }
          ];
          builder = [
            {
              name = "alpha";
              key = alphaPub;
              operator = "acme";
            }
            {
              name = "beta";
              key = betaPub;
            }
          ];
          policy = {
            threshold = "1 of [acme, beta]";
            require-built = true;
          };
          substituter.upstreams = [ "http://cache.example:5000" ];
          substituter.priority = 20;
        };
      };
    };
    substituter-shared = {
      config = {
        services.provenix-substituter = {
          enable = true;
          exclusive = false;
          signingKeyFile = "/var/lib/secrets/provenix-substituter.sec";
          publicKey = clientPub;
          settings = {
            log = [
              {
                url = "http://log-a.example:8080";
                key = logVerifier;
              }
            ];
            builder = [
              {
                name = "alpha";
                key = alphaPub;
              }
            ];
            policy.threshold = "1 of [alpha]";
            substituter.listen = "0.0.0.0:37600";
          };
        };
        nix.settings.extra-substituters = [ "https://other.example" ];
      };
      warnings = [
        "services.provenix-substituter.exclusive = false: every other substituter whose key Nix trusts can serve paths without the quorum."
      ];
    };
    substituter-bypass = {
      config = {
        services.provenix-substituter = {
          enable = true;
          signingKeyFile = ./keys/client.sec;
          settings.policy.threshold = "1 of [alpha]";
          settings.substituter.signing-key-file = "/etc/x.sec";
        };
        nix.settings.extra-substituters = [ "https://other.example" ];
      };
      failedAssertions = [
        "services.provenix-substituter.signingKeyFile = ${toString ./keys/client.sec} is a Nix path: it would be copied into the world-readable Nix store. Give the path of a file outside the store as a string, e.g. \"/run/secrets/provenix\"."
        "services.provenix-substituter.publicKey must be set to the public half of signingKeyFile (NAME:BASE64)."
        "services.provenix-substituter.settings.substituter.signing-key-file and .state-file are managed by the module: set services.provenix-substituter.signingKeyFile instead."
        "services.provenix-substituter.exclusive is set, but nix.conf would also trust other caches, which bypass the quorum: extra-substituters = [\"https://other.example\"]. Remove these definitions (another module may use mkForce too), or set exclusive = false."
      ];
    };
    # Another module forcing its own cache: equal priorities concatenate, the assertion sees it.
    substituter-forced-elsewhere = {
      config = {
        services.provenix-substituter = {
          enable = true;
          signingKeyFile = "/var/lib/secrets/provenix-substituter.sec";
          publicKey = clientPub;
          settings.policy.threshold = "1 of [alpha]";
        };
        nix.settings.substituters = lib.mkForce [ "https://cache.example" ];
        nix.settings.trusted-public-keys = [ "cache.example-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=" ];
      };
      failedAssertions = [
        "services.provenix-substituter.exclusive is set, but nix.conf would also trust other caches, which bypass the quorum: substituters = [\"https://cache.example\"]. Remove these definitions (another module may use mkForce too), or set exclusive = false."
      ];
    };

    # ---- all three roles on one machine ---------------------------------------------------------
    all-roles = {
      config = {
        services.provenix-log = {
          enable = true;
          settings.origin = "log.test";
          builders = [ alphaPub ];
        };
        services.provenix-builder = {
          enable = true;
          keyFile = "/var/lib/provenix-builder/alpha.sec";
          settings.logs = [ "http://127.0.0.1:8080" ];
        };
        services.provenix-substituter = {
          enable = true;
          signingKeyFile = "/var/lib/secrets/provenix-substituter.sec";
          publicKey = clientPub;
          settings = {
            log = [
              {
                url = "http://127.0.0.1:8080";
                key = logVerifier;
              }
            ];
            builder = [
              {
                name = "alpha";
                key = alphaPub;
              }
            ];
            policy.threshold = "1 of [alpha]";
          };
        };
      };
    };
  };

  evaluate =
    name: sample:
    evalConfig {
      modules = [
        ../modules
        {
          _file = "sample ${name}";
          config = sample.config;
        }
      ];
    };

  cases = builtins.mapAttrs (
    name: sample:
    let
      e = evaluate name sample;
    in
    if (sample.failedAssertions or [ ]) == [ ] then
      view e
    else
      {
        inherit (e) failedAssertions warnings;
      }
  ) samples;

  # Every case produced exactly the assertion failures and warnings it declares.
  check = builtins.all (x: x) (
    lib.mapAttrsToList (
      name: sample:
      let
        got = cases.${name};
        want = {
          failedAssertions = sample.failedAssertions or [ ];
          warnings = sample.warnings or [ ];
        };
        have = {
          inherit (got) failedAssertions warnings;
        };
      in
      if have == want then
        builtins.deepSeq got true
      else
        throw "stand-in case ${name}: expected ${builtins.toJSON want}, got ${builtins.toJSON have}"
    ) samples
  );
in
{
  inherit cases check samples;
  names = builtins.attrNames samples;
}
