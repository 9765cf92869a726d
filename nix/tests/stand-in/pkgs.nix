# A fake `pkgs` for the stand-in module system: every "derivation" is a description (an
# attribute set with `type = "derivation"`, a name, a store path derived from its content, and
# what it would build), never built. Tests read the descriptions: the TOML text a config file
# would hold, the text of a script, the command a check would run.
{ lib }:
let
  inherit (builtins)
    attrNames
    concatStringsSep
    filter
    hashString
    isAttrs
    isBool
    isFloat
    isInt
    isList
    isPath
    isString
    match
    replaceStrings
    toJSON
    ;

  # A store path from a content hash, in Nix's base-32 alphabet (hex with e→g is a subset).
  storePath =
    name: seed:
    "${builtins.storeDir}/${replaceStrings [ "e" ] [ "g" ] (builtins.substring 0 32 (hashString "sha256" seed))}-${name}";

  fake =
    name: seed: attrs:
    attrs
    // {
      type = "derivation";
      inherit name;
      outPath = storePath name seed;
      drvPath = storePath "${name}.drv" seed;
    };

  fakePackage =
    pname: version: extra:
    fake "${pname}-${version}" "package ${pname} ${version}" (
      {
        inherit pname version;
        meta.mainProgram = pname;
      }
      // extra
    );

  runtimeShell = "${fakePackage "bash" "5.2" { }}/bin/bash";

  # ---- TOML (v1.0) ------------------------------------------------------------------------------
  isTable = v: isAttrs v && !(v ? outPath);
  isTableArray = v: isList v && v != [ ] && lib.all isTable v;
  tomlString =
    s:
    let
      escaped =
        replaceStrings
          [ "\\" "\"" "\n" "\t" "\r" ]
          [ "\\\\" "\\\"" "\\n" "\\t" "\\r" ]
          s;
    in
    # Other control characters (Nix strings cannot spell \b or \f) are refused, not escaped.
    if match ".*[[:cntrl:]].*" escaped != null then
      throw "formats.toml: ${toJSON s} holds a control character"
    else "\"${escaped}\"";
  tomlKey = k: if match "[A-Za-z0-9_-]+" k != null then k else tomlString k;
  tomlFloat =
    f:
    let
      s = toJSON f;
    in
    if match ".*[.eE].*" s != null then s else "${s}.0";
  tomlInline =
    v:
    if isBool v then (if v then "true" else "false")
    else if isInt v then toString v
    else if isFloat v then tomlFloat v
    else if isString v then tomlString v
    else if isPath v then tomlString (toString v)
    else if isAttrs v && v ? outPath then tomlString v.outPath
    else if isList v then "[" + concatStringsSep ", " (map tomlInline v) + "]"
    else if isAttrs v then
      "{ " + concatStringsSep ", " (map (k: "${tomlKey k} = ${tomlInline v.${k}}") (attrNames v)) + " }"
    else throw "formats.toml: cannot represent ${builtins.typeOf v}";
  tomlHeader = path: concatStringsSep "." (map tomlKey path);
  # Keys of a table: plain values first, then sub-tables ([a.b]), then arrays of tables ([[a.c]])
  # whose elements are written with inline sub-tables.
  tomlTable =
    path: t:
    let
      names = attrNames t;
      plain = filter (n: !(isTable t.${n}) && !(isTableArray t.${n})) names;
      tables = filter (n: isTable t.${n}) names;
      arrays = filter (n: isTableArray t.${n}) names;
      element = e: lib.concatMapStrings (k: "${tomlKey k} = ${tomlInline e.${k}}\n") (attrNames e);
    in
    lib.concatMapStrings (n: "${tomlKey n} = ${tomlInline t.${n}}\n") plain
    + lib.concatMapStrings (n: "\n[${tomlHeader (path ++ [ n ])}]\n" + tomlTable (path ++ [ n ]) t.${n}) tables
    + lib.concatMapStrings (
      n: lib.concatMapStrings (e: "\n[[${tomlHeader (path ++ [ n ])}]]\n" + element e) t.${n}
    ) arrays;
in
{
  inherit runtimeShell;
  stdenv.hostPlatform.system = "x86_64-linux";

  formats.toml =
    { }:
    {
      # As nixpkgs: booleans, integers, floats, strings, paths, and tables/arrays of them; no null.
      type =
        let
          valueType =
            lib.types.oneOf [
              lib.types.bool
              lib.types.int
              lib.types.float
              lib.types.str
              lib.types.path
              (lib.types.attrsOf valueType)
              (lib.types.listOf valueType)
            ]
            // {
              description = "TOML value";
            };
        in
        valueType;
      generate =
        name: value:
        let
          text = tomlTable [ ] value;
        in
        fake name text {
          inherit text value;
        };
    };

  writeText = name: text: fake name text { inherit text; };
  writeShellScript =
    name: text:
    let
      full = "#!${runtimeShell}\n${text}";
    in
    fake name full {
      text = full;
      executable = true;
    };
  writeShellScriptBin =
    name: text:
    let
      full = "#!${runtimeShell}\n${text}";
    in
    fake name full {
      text = full;
      executable = true;
      destination = "/bin/${name}";
    };
  runCommand =
    name: env: buildCommand:
    fake name "${toJSON (lib.mapAttrs (_: v: if isAttrs v && v ? outPath then v.outPath else v) env)} ${buildCommand}" (
      env // { inherit buildCommand; }
    );

  provenix = fakePackage "provenix" "0.1.0" { };
  nix = fakePackage "nix" "2.18.8" { };
  systemd = fakePackage "systemd" "256.8" { };
  coreutils = fakePackage "coreutils" "9.5" { };
}
