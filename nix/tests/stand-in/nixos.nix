# The NixOS options provenix's modules read or define, declared with the types NixOS gives them
# (a subset: a module that sets anything else fails here with "The option `…' does not exist",
# as it would on NixOS if the name were wrong).
{ lib, pkgs, ... }:
let
  inherit (lib) mkOption types;
  listOfStr = mkOption {
    type = types.listOf types.str;
    default = [ ];
  };

  # A value in a [Service]/[Unit] section: scalars must agree, lists are concatenated.
  unitOption = lib.mkOptionType {
    name = "systemd option";
    check =
      let
        atom = x: builtins.isBool x || builtins.isInt x || builtins.isString x || lib.isStringLike x;
      in
      x: atom x || (builtins.isList x && lib.all atom x);
    merge =
      loc: defs:
      if lib.any (d: builtins.isList d.value) defs then lib.concatMap (d: lib.toList d.value) defs
      else lib.mergeEqualOption loc defs;
  };

  service =
    { name, ... }:
    {
      options = {
        enable = mkOption {
          type = types.bool;
          default = true;
        };
        description = mkOption {
          type = types.str;
          default = "";
        };
        documentation = listOfStr;
        wantedBy = listOfStr;
        requiredBy = listOfStr;
        wants = listOfStr;
        requires = listOfStr;
        after = listOfStr;
        before = listOfStr;
        bindsTo = listOfStr;
        partOf = listOfStr;
        conflicts = listOfStr;
        path = mkOption {
          type = types.listOf (types.either types.package types.str);
          default = [ ];
        };
        environment = mkOption {
          type = types.attrsOf (types.nullOr (types.oneOf [ types.str types.path types.package ]));
          default = { };
        };
        serviceConfig = mkOption {
          type = types.attrsOf unitOption;
          default = { };
        };
        unitConfig = mkOption {
          type = types.attrsOf unitOption;
          default = { };
        };
        script = mkOption {
          type = types.lines;
          default = "";
        };
        preStart = mkOption {
          type = types.lines;
          default = "";
        };
        restartTriggers = mkOption {
          type = types.listOf types.unspecified;
          default = [ ];
        };
        restartIfChanged = mkOption {
          type = types.bool;
          default = true;
        };
        startAt = mkOption {
          type = types.either types.str (types.listOf types.str);
          default = [ ];
        };
      };
    };

  # nix.conf values: what NixOS' `nix.settings` freeform type accepts.
  confAtom =
    types.nullOr (
      types.oneOf [
        types.bool
        types.int
        types.float
        types.str
        types.path
        types.package
      ]
    )
    // {
      description = "Nix config atom (null, bool, int, float, str, path or package)";
    };
  confValue = types.either confAtom (types.listOf confAtom);
in
{
  options = {
    assertions = mkOption {
      type = types.listOf (
        types.submodule {
          options = {
            assertion = mkOption { type = types.bool; };
            message = mkOption { type = types.str; };
          };
        }
      );
      default = [ ];
    };
    warnings = listOfStr;

    networking.firewall.allowedTCPPorts = mkOption {
      type = types.listOf types.port;
      default = [ ];
    };

    environment.systemPackages = mkOption {
      type = types.listOf types.package;
      default = [ ];
    };
    environment.etc = mkOption {
      default = { };
      type = types.attrsOf (
        types.submodule (
          { name, ... }:
          {
            options = {
              enable = mkOption {
                type = types.bool;
                default = true;
              };
              target = mkOption {
                type = types.str;
                default = name;
              };
              source = mkOption { type = types.path; };
              mode = mkOption {
                type = types.str;
                default = "symlink";
              };
            };
          }
        )
      );
    };

    systemd.package = mkOption {
      type = types.package;
      default = pkgs.systemd;
    };
    systemd.services = mkOption {
      type = types.attrsOf (types.submodule service);
      default = { };
    };
    systemd.tmpfiles.rules = listOfStr;

    nix.package = mkOption {
      type = types.package;
      default = pkgs.nix;
    };
    nix.settings = mkOption {
      default = { };
      type = types.submodule {
        freeformType = types.attrsOf confValue;
        options = {
          substituters = listOfStr;
          trusted-substituters = listOfStr;
          trusted-public-keys = listOfStr;
          require-sigs = mkOption {
            type = types.bool;
            default = true;
          };
        };
      };
    };

    services.postgresql = {
      enable = mkOption {
        type = types.bool;
        default = false;
      };
      ensureDatabases = listOfStr;
      ensureUsers = mkOption {
        default = [ ];
        type = types.listOf (
          types.submodule {
            options = {
              name = mkOption { type = types.str; };
              ensureDBOwnership = mkOption {
                type = types.bool;
                default = false;
              };
            };
          }
        );
      };
    };
  };

  # What NixOS itself defines (at normal priority, like nixos/modules/config/nix.nix), so a
  # module that wants to be the only substituter has to win over it.
  config.nix.settings = {
    substituters = [ "https://cache.nixos.org/" ];
    trusted-public-keys = [ "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=" ];
  };
}
