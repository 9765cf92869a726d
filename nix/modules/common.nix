# Helpers shared by provenix's NixOS modules (log, builder, substituter).
{ lib }:
rec {
  # True when a file option's value would end up in the world-readable Nix store: a string under
  # the store directory, or a Nix path literal (interpolating one copies the file into the store).
  inStore = p: builtins.isPath p || lib.hasPrefix "${builtins.storeDir}/" (toString p);

  # The assertion every secret-file option gets: null (unset) or a path outside the store.
  secretFileAssertion = option: value: {
    assertion = value == null || !(inStore value);
    message =
      if builtins.isPath value then
        "${option} = ${toString value} is a Nix path: it would be copied into the world-readable Nix store. Give the path of a file outside the store as a string, e.g. \"/run/secrets/provenix\"."
      else
        "${option} = ${toString value} is in the world-readable Nix store. Give the path of a file outside the store, e.g. \"/run/secrets/provenix\".";
  };

  # The port of an `IP:PORT` / `[IPv6]:PORT` listen address, or null when it has none.
  listenPort =
    listen:
    let
      m = builtins.match "(.*):([0-9]+)" listen;
    in
    if m == null then null else lib.toInt (builtins.elemAt m 1);

  # An `http://` URL this machine reaches a listen address at (wildcards become loopback).
  localUrl =
    listen:
    let
      m = builtins.match "(.*):([0-9]+)" listen;
      host = builtins.elemAt m 0;
      port = builtins.elemAt m 1;
      reach =
        if host == "0.0.0.0" then "127.0.0.1"
        else if host == "[::]" then "[::1]"
        else host;
    in
    # Unparsable: left as written (an assertion on the listen option reports it).
    if m == null then "http://${listen}" else "http://${reach}:${port}";

  # Nix public key (`NAME:BASE64` of 32 bytes) and the names Nix/provenix accept.
  keyNamePattern = "[A-Za-z0-9._-]+";
  publicKeyPattern = "${keyNamePattern}:[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=";

  # A settings value without its unset (null) fields, at any depth (also inside lists, e.g. the
  # `[[builder]]` tables of trust.toml): TOML has no null.
  dropNulls =
    v:
    if builtins.isAttrs v && !(v ? outPath) then
      builtins.mapAttrs (_: dropNulls) (lib.filterAttrs (_: x: x != null) v)
    else if builtins.isList v then
      map dropNulls v
    else
      v;

  # What a unit listening on `port` needs beyond `hardening`: binding a port below 1024 takes
  # CAP_NET_BIND_SERVICE (and no private user namespace, where the capability would not count).
  bindPrivileges =
    port:
    let
      privileged = port != null && port < 1024;
    in
    {
      PrivateUsers = !privileged;
      CapabilityBoundingSet = if privileged then [ "CAP_NET_BIND_SERVICE" ] else "";
      AmbientCapabilities = if privileged then [ "CAP_NET_BIND_SERVICE" ] else "";
    };

  # systemd sandboxing shared by every provenix unit. Each module adds what it needs on top
  # (or relaxes one setting, saying why).
  hardening = {
    NoNewPrivileges = true;
    PrivateTmp = true;
    PrivateDevices = true;
    PrivateMounts = true;
    ProtectSystem = "strict";
    ProtectHome = true;
    ProtectKernelTunables = true;
    ProtectKernelModules = true;
    ProtectKernelLogs = true;
    ProtectControlGroups = true;
    ProtectClock = true;
    ProtectHostname = true;
    ProtectProc = "invisible";
    RestrictAddressFamilies = [
      "AF_INET"
      "AF_INET6"
      "AF_UNIX"
    ];
    RestrictNamespaces = true;
    RestrictRealtime = true;
    RestrictSUIDSGID = true;
    LockPersonality = true;
    MemoryDenyWriteExecute = true;
    SystemCallArchitectures = "native";
    SystemCallErrorNumber = "EPERM";
    CapabilityBoundingSet = "";
    AmbientCapabilities = "";
    DevicePolicy = "closed";
    RemoveIPC = true;
    UMask = "0077";
  };
}
