# A minimal stand-in for nixpkgs' `lib`, enough to evaluate provenix's NixOS modules where
# nixpkgs is not available (offline CI). Written from the documented semantics of the NixOS
# module system, not copied from nixpkgs:
#
# - option declarations (`mkOption`), definitions from many modules merged per option, with
#   `mkIf` / `mkMerge` pushed down into attribute sets (so `config` can be used in conditions
#   without infinite recursion) and `mkOverride` priorities (`mkDefault`, `mkForce`, option
#   defaults at 1500);
# - types that check every definition and merge like the real ones (`str`, `bool`, `int`,
#   `port`, `path`, `package`, `enum`, `strMatching`, `nullOr`, `listOf`, `attrsOf`, `either`,
#   `oneOf`, `submodule` with `freeformType`, `lines`, `anything`);
# - "The option `x' does not exist" for a definition nobody declared, "used but not defined",
#   "is not of type", "conflicting definition values" and read-only violations, with the same
#   wording as NixOS so the tests' negative cases mean the same thing there.
#
# Known simplifications (the modules under test avoid relying on them; the VM tests run the real
# module system): freeform definitions are recognised only at a submodule's top level;
# `mkOrder`/`mkBefore`/`mkAfter`, `disabledModules`, `_module.args` and option `apply` chains of
# several declarations are not implemented.
let
  inherit (builtins)
    all any attrNames concatLists concatMap concatStringsSep elem elemAt filter foldl' genList
    hasAttr head isAttrs isBool isFloat isFunction isInt isList isPath isString length
    listToAttrs mapAttrs match replaceStrings split stringLength substring tail toJSON typeOf;

  lib = rec {
    # ---- lists, strings, attribute sets ---------------------------------------------------------
    id = x: x;
    const = x: _: x;
    inherit concatLists concatMap elem filter foldl' head tail length all any attrNames mapAttrs;
    optional = cond: x: if cond then [ x ] else [ ];
    optionals = cond: xs: if cond then xs else [ ];
    optionalString = cond: s: if cond then s else "";
    optionalAttrs = cond: as: if cond then as else { };
    last = xs: elemAt xs (length xs - 1);
    toList = x: if isList x then x else [ x ];
    unique = foldl' (acc: x: if elem x acc then acc else acc ++ [ x ]) [ ];
    imap1 = f: xs: genList (i: f (i + 1) (elemAt xs i)) (length xs);
    concatStringsSep = builtins.concatStringsSep;
    concatStrings = builtins.concatStringsSep "";
    concatMapStrings = f: xs: builtins.concatStringsSep "" (map f xs);
    concatMapStringsSep = sep: f: xs: builtins.concatStringsSep sep (map f xs);
    hasPrefix = pre: s: substring 0 (stringLength pre) s == pre;
    hasSuffix =
      suf: s:
      let
        n = stringLength s;
        m = stringLength suf;
      in
      n >= m && substring (n - m) m s == suf;
    removePrefix = pre: s: if hasPrefix pre s then substring (stringLength pre) (-1) s else s;
    removeSuffix =
      suf: s: if hasSuffix suf s then substring 0 (stringLength s - stringLength suf) s else s;
    escapeRegex = replaceStrings
      [ "\\" "[" "]" "{" "}" "(" ")" "." "*" "+" "?" "^" "$" "|" ]
      [ "\\\\" "\\[" "\\]" "\\{" "\\}" "\\(" "\\)" "\\." "\\*" "\\+" "\\?" "\\^" "\\$" "\\|" ];
    splitString = sep: s: filter isString (split (escapeRegex sep) s);
    toInt =
      s:
      if match "0|[1-9][0-9]*" s != null then builtins.fromJSON s
      else throw "toInt: ${toJSON s} is not a decimal integer";
    # Quote for a POSIX shell unless the word is made of safe characters only.
    escapeShellArg =
      arg:
      let
        s = toString arg;
      in
      if match "[[:alnum:],._+:@%/=-]+" s != null then s
      else "'${replaceStrings [ "'" ] [ "'\\''" ] s}'";
    escapeShellArgs = xs: builtins.concatStringsSep " " (map escapeShellArg xs);
    nameValuePair = name: value: { inherit name value; };
    mapAttrsToList = f: as: map (n: f n as.${n}) (attrNames as);
    filterAttrs =
      pred: as: listToAttrs (concatMap (n: if pred n as.${n} then [ (nameValuePair n as.${n}) ] else [ ]) (attrNames as));
    filterAttrsRecursive =
      pred: as:
      listToAttrs (
        concatMap (
          n:
          let
            v = as.${n};
          in
          if pred n v then [ (nameValuePair n (if isAttrs v then filterAttrsRecursive pred v else v)) ] else [ ]
        ) (attrNames as)
      );
    recursiveUpdate =
      lhs: rhs:
      lhs
      // mapAttrs (
        n: v: if isAttrs v && lhs ? ${n} && isAttrs lhs.${n} then recursiveUpdate lhs.${n} v else v
      ) rhs;
    setAttrByPath = path: value: if path == [ ] then value else { ${head path} = setAttrByPath (tail path) value; };
    attrByPath =
      path: default: as:
      if path == [ ] then as
      else if isAttrs as && as ? ${head path} then attrByPath (tail path) default as.${head path}
      else default;
    genAttrs = names: f: listToAttrs (map (n: nameValuePair n (f n)) names);
    isDerivation = x: isAttrs x && (x.type or null) == "derivation";
    isStringLike = x: isString x || isPath x || (isAttrs x && (x ? outPath || x ? __toString));
    isStorePath =
      x: isStringLike x && !isPath x && match "${escapeRegex builtins.storeDir}/[0-9a-z]{32}-[^/]+" (toString x) != null;
    literalExpression = text: {
      _type = "literalExpression";
      inherit text;
    };
    literalMD = text: {
      _type = "literalMD";
      inherit text;
    };
    showOption = loc: builtins.concatStringsSep "." loc;
    showVal =
      v:
      if isAttrs v && (v ? outPath || v ? _type) then "<${v._type or "derivation"} ${v.name or ""}>"
      else if isFunction v then "<function>"
      else if isPath v then toString v
      else toJSON v;
    showFiles = files: builtins.concatStringsSep ", " (map (f: "`${toString f}'") (unique files));

    # ---- properties ------------------------------------------------------------------------------
    mkIf = condition: content: {
      _type = "if";
      inherit condition content;
    };
    mkMerge = contents: {
      _type = "merge";
      inherit contents;
    };
    mkOverride = priority: content: {
      _type = "override";
      inherit priority content;
    };
    mkOptionDefault = mkOverride 1500;
    mkDefault = mkOverride 1000;
    mkForce = mkOverride 50;
    mkVMOverride = mkOverride 10;
    defaultPriority = 100;

    # An attribute-set definition with its mkMerge/mkIf/mkOverride moved onto each attribute.
    # Only the *names* of the content are looked at, never a condition.
    pushDownProperties =
      cfg:
      let
        t = cfg._type or "";
      in
      if t == "merge" then concatMap pushDownProperties cfg.contents
      else if t == "if" then map (mapAttrs (_: v: mkIf cfg.condition v)) (pushDownProperties cfg.content)
      else if t == "override" then map (mapAttrs (_: v: mkOverride cfg.priority v)) (pushDownProperties cfg.content)
      else [ cfg ];

    # A leaf definition with mkMerge expanded and mkIf decided (false: the definition vanishes).
    dischargeProperties =
      def:
      let
        t = def._type or "";
      in
      if t == "merge" then concatMap dischargeProperties def.contents
      else if t == "if" then
        if isBool def.condition then (if def.condition then dischargeProperties def.content else [ ])
        else throw "mkIf called with a non-Boolean condition"
      else [ def ];

    # Keeps the definitions of the highest priority (lowest number), without their wrapper.
    filterOverrides =
      defs:
      let
        prio = def: if (def.value._type or "") == "override" then def.value.priority else defaultPriority;
        best = foldl' (p: d: if prio d < p then prio d else p) 9999 defs;
        strip = def: if (def.value._type or "") == "override" then def // { value = def.value.content; } else def;
      in
      map strip (filter (d: prio d == best) defs);

    # ---- merging ---------------------------------------------------------------------------------
    mergeEqualOption =
      loc: defs:
      if defs == [ ] then throw "The option `${showOption loc}' is used but not defined."
      else
        (foldl' (
          first: def:
          if def.value != first.value then
            throw "The option `${showOption loc}' has conflicting definition values:\n- In `${toString first.file}': ${showVal first.value}\n- In `${toString def.file}': ${showVal def.value}"
          else first
        ) (head defs) defs).value;
    mergeOneOption =
      loc: defs:
      if defs == [ ] then throw "The option `${showOption loc}' is used but not defined."
      else if length defs != 1 then
        throw "The unique option `${showOption loc}' is defined multiple times. Definition values:\n${
          builtins.concatStringsSep "\n" (map (d: "- In `${toString d.file}': ${showVal d.value}") defs)
        }"
      else (head defs).value;

    # Merges the definitions of one option: properties, priorities, type check, type merge.
    # Returns { isDefined; value; } (value throws when nothing is defined).
    mergeDefinitions =
      loc: type: defs:
      let
        discharge = ds: concatMap (d: map (v: d // { value = v; }) (dischargeProperties d.value)) ds;
        final = discharge (filterOverrides (discharge defs));
        bad = filter (d: !(type.check d.value)) final;
      in
      {
        isDefined = final != [ ];
        value =
          if final == [ ] then throw "The option `${showOption loc}' is used but not defined."
          else if bad != [ ] then
            throw "A definition for option `${showOption loc}' is not of type `${type.description}'. Definition values:\n- In `${toString (head bad).file}': ${showVal (head bad).value}"
          else type.merge loc final;
      };

    # ---- options and types -----------------------------------------------------------------------
    isOption = x: isAttrs x && (x._type or "") == "option";
    mkOption = attrs: attrs // { _type = "option"; };
    mkEnableOption =
      name:
      mkOption {
        type = types.bool;
        default = false;
        example = true;
        description = "Whether to enable ${name}.";
      };

    mkOptionType =
      {
        name,
        description ? name,
        check ? (_: true),
        merge ? mergeEqualOption,
        ...
      }@attrs:
      attrs
      // {
        _type = "option-type";
        inherit
          name
          description
          check
          merge
          ;
      };

    types = rec {
      unspecified = mkOptionType {
        name = "unspecified";
        merge = loc: defs: if length defs == 1 then (head defs).value else mergeEqualOption loc defs;
      };
      anything = mkOptionType {
        name = "anything";
        merge =
          loc: defs:
          if all (d: isAttrs d.value && !isDerivation d.value) defs then (attrsOf anything).merge loc defs
          else mergeEqualOption loc defs;
      };
      bool = mkOptionType {
        name = "bool";
        description = "boolean";
        check = isBool;
      };
      int = mkOptionType {
        name = "int";
        description = "signed integer";
        check = isInt;
      };
      float = mkOptionType {
        name = "float";
        description = "floating point number";
        check = isFloat;
      };
      ints = {
        between =
          lo: hi:
          mkOptionType {
            name = "intBetween";
            description = "integer between ${toString lo} and ${toString hi} (both inclusive)";
            check = x: isInt x && x >= lo && x <= hi;
          };
        unsigned = mkOptionType {
          name = "unsignedInt";
          description = "unsigned integer, meaning >=0";
          check = x: isInt x && x >= 0;
        };
        positive = mkOptionType {
          name = "positiveInt";
          description = "positive integer, meaning >0";
          check = x: isInt x && x > 0;
        };
      };
      port = ints.between 0 65535 // {
        name = "port";
        description = "16 bit unsigned integer; between 0 and 65535 (both inclusive)";
      };
      str = mkOptionType {
        name = "str";
        description = "string";
        check = isString;
      };
      nonEmptyStr = mkOptionType {
        name = "nonEmptyStr";
        description = "non-empty string";
        check = x: isString x && match "[[:space:]]*" x == null;
      };
      strMatching =
        pattern:
        mkOptionType {
          name = "strMatching ${toJSON pattern}";
          description = "string matching the pattern ${pattern}";
          check = x: isString x && match pattern x != null;
        };
      lines = mkOptionType {
        name = "lines";
        description = "strings concatenated with \"\\n\"";
        check = isString;
        merge = _loc: defs: builtins.concatStringsSep "\n" (map (d: d.value) defs);
      };
      path = mkOptionType {
        name = "path";
        description = "path";
        check = x: isStringLike x && substring 0 1 (toString x) == "/";
      };
      package = mkOptionType {
        name = "package";
        description = "package";
        check = x: isDerivation x || isStorePath x;
        merge = mergeOneOption;
      };
      enum =
        values:
        mkOptionType {
          name = "enum";
          description = "one of ${builtins.concatStringsSep ", " (map toJSON values)}";
          check = x: elem x values;
        };
      nullOr =
        t:
        mkOptionType {
          name = "nullOr";
          description = "null or ${t.description}";
          check = x: x == null || t.check x;
          merge =
            loc: defs:
            let
              nulls = filter (d: d.value == null) defs;
            in
            if length nulls == length defs then null
            else if nulls != [ ] then
              throw "The option `${showOption loc}' is defined both null and not null, in ${showFiles (map (d: d.file) defs)}."
            else t.merge loc defs;
        };
      listOf =
        t:
        mkOptionType {
          name = "listOf";
          description = "list of ${t.description}";
          check = isList;
          merge =
            loc: defs:
            concatLists (
              imap1 (
                i: def:
                concatLists (
                  imap1 (
                    j: v:
                    let
                      r = mergeDefinitions (loc ++ [ "[definition ${toString i}-entry ${toString j}]" ]) t [
                        {
                          inherit (def) file;
                          value = v;
                        }
                      ];
                    in
                    if r.isDefined then [ r.value ] else [ ]
                  ) def.value
                )
              ) defs
            );
        };
      attrsOf =
        t:
        mkOptionType {
          name = "attrsOf";
          description = "attribute set of ${t.description}";
          check = isAttrs;
          merge =
            loc: defs:
            let
              names = unique (concatMap (d: attrNames d.value) defs);
              one =
                n:
                mergeDefinitions (loc ++ [ n ]) t (
                  concatMap (
                    d:
                    if d.value ? ${n} then
                      [
                        {
                          inherit (d) file;
                          value = d.value.${n};
                        }
                      ]
                    else [ ]
                  ) defs
                );
            in
            listToAttrs (
              concatMap (
                n:
                let
                  r = one n;
                in
                if r.isDefined then [ (nameValuePair n r.value) ] else [ ]
              ) names
            );
        };
      either =
        a: b:
        mkOptionType {
          name = "either";
          description = "${a.description} or ${b.description}";
          check = x: a.check x || b.check x;
          merge =
            loc: defs:
            if all (d: a.check d.value) defs then a.merge loc defs
            else if all (d: b.check d.value) defs then b.merge loc defs
            else
              throw "The option `${showOption loc}' has conflicting definition types (${a.description} and ${b.description}) in ${showFiles (map (d: d.file) defs)}.";
        };
      oneOf =
        ts:
        if ts == [ ] then throw "types.oneOf needs at least one type"
        else foldl' either (head ts) (tail ts);
      submoduleWith =
        {
          modules,
          specialArgs ? { },
        }:
        mkOptionType {
          name = "submodule";
          description = "submodule";
          check = x: isAttrs x || isFunction x || isPath x;
          inherit modules;
          merge =
            loc: defs:
            (evalModules {
              prefix = loc;
              specialArgs = specialArgs // {
                name = last loc;
              };
              modules =
                modules
                ++ map (
                  d:
                  if isAttrs d.value then
                    {
                      _file = d.file;
                      config = d.value;
                    }
                  else d.value
                ) defs;
            }).config;
        };
      submodule = modules: submoduleWith { modules = toList modules; };
    };

    # ---- evaluation ------------------------------------------------------------------------------

    # Turns modules (paths, functions, attribute sets) into a flat list of
    # { file; options; config; freeformType; } following `imports`, each path once.
    collectModules =
      args: modules:
      let
        load =
          file: m:
          if isPath m || isString m then load (toString m) (import m)
          else if isFunction m then
            load file (m (builtins.intersectAttrs (builtins.functionArgs m) args))
          else if !isAttrs m then throw "module in ${file} is neither a function, a path nor an attribute set"
          else
            let
              full = m ? options || m ? config;
              shorthandIgnored = [
                "imports"
                "_file"
                "key"
                "freeformType"
                "meta"
              ];
              unknownTop = filter (
                n:
                !(elem n (shorthandIgnored ++ [
                  "options"
                  "config"
                ]))
              ) (attrNames m);
            in
            if full && unknownTop != [ ] then
              throw "Module `${m._file or file}' has an unsupported attribute `${head unknownTop}'. This is caused by introducing a top-level `config' or `options' attribute. Add configuration attributes immediately on the top level instead, or move all of them (namely: ${builtins.concatStringsSep " " unknownTop}) into the explicit `config' attribute."
            else
              {
                file = m._file or file;
                key = if isPath m || isString m then toString m else null;
                imports = m.imports or [ ];
                options = m.options or { };
                config =
                  if full then m.config or { }
                  else removeAttrs m shorthandIgnored;
                freeformType = m.freeformType or null;
              };
        go =
          seen: file: ms:
          foldl' (
            acc: m:
            let
              key = if isPath m || isString m then toString m else null;
            in
            if key != null && elem key acc.seen then acc
            else
              let
                loaded = load file m;
                sub = go (acc.seen ++ (if key != null then [ key ] else [ ])) loaded.file loaded.imports;
              in
              {
                seen = sub.seen;
                list = acc.list ++ [ loaded ] ++ sub.list;
              }
          ) { inherit seen; list = [ ]; } ms;
      in
      (go [ ] "<unknown-file>" modules).list;

    # Merges the option declarations of all modules into one tree (a leaf is an option).
    mergeDeclarations =
      loc: decls:
      let
        names = unique (concatMap (d: attrNames d.options) decls);
        at =
          n:
          concatMap (
            d:
            if d.options ? ${n} then
              [
                {
                  inherit (d) file;
                  options = d.options.${n};
                }
              ]
            else [ ]
          ) decls;
      in
      listToAttrs (
        map (
          n:
          let
            here = at n;
            opts = filter (d: isOption d.options) here;
          in
          nameValuePair n (
            if opts == [ ] then mergeDeclarations (loc ++ [ n ]) here
            else if length here == 1 then (head opts).options // { declarations = [ (head opts).file ]; }
            else
              throw "The option `${showOption (loc ++ [ n ])}' in ${showFiles (map (d: d.file) here)} is declared more than once."
          )
        ) names
      );

    # Evaluates one option from its definitions.
    evalOption =
      loc: opt: defs:
      let
        withDefault =
          (
            if opt ? default then
              [
                {
                  file = "default of ${showOption loc}";
                  value = mkOptionDefault opt.default;
                }
              ]
            else [ ]
          )
          ++ defs;
        merged = mergeDefinitions loc (opt.type or types.unspecified) withDefault;
        value =
          if (opt.readOnly or false) && length defs > 1 then
            throw "The option `${showOption loc}' is read-only, but it's set multiple times. Definition values:\n${
              builtins.concatStringsSep "\n" (map (d: "- In `${toString d.file}'") defs)
            }"
          else merged.value;
      in
      if opt ? apply then opt.apply value else value;

    # Evaluates a tree of declarations against definitions ({ file; value; } lists).
    # `freeform`: null, or the type that takes every definition nobody declared (top level only).
    evalTree =
      loc: decls: freeform: defs:
      let
        pushed = concatMap (
          d:
          map (
            v:
            if isAttrs v && !(v ? _type) then
              {
                inherit (d) file;
                value = v;
              }
            else
              throw "The option `${showOption loc}' is an attribute set of options, but `${toString d.file}' defines it as ${showVal v}."
          ) (pushDownProperties d.value)
        ) defs;
        names = unique (concatMap (d: attrNames d.value) pushed);
        undeclared = filter (n: !(decls ? ${n})) names;
        defsOf =
          n:
          concatMap (
            d:
            if d.value ? ${n} then
              [
                {
                  inherit (d) file;
                  value = d.value.${n};
                }
              ]
            else [ ]
          ) pushed;
        declared = mapAttrs (
          n: decl: if isOption decl then evalOption (loc ++ [ n ]) decl (defsOf n) else evalTree (loc ++ [ n ]) decl null (defsOf n)
        ) decls;
        freeDefs = map (d: {
          inherit (d) file;
          value = builtins.intersectAttrs (genAttrs undeclared (_: null)) d.value;
        }) (filter (d: any (n: d.value ? ${n}) undeclared) pushed);
        free = (freeform.merge) loc freeDefs;
        firstUndeclared = head undeclared;
        offending = head (defsOf firstUndeclared);
      in
      if undeclared == [ ] then declared
      else if freeform != null then free // declared
      else
        throw "The option `${showOption (loc ++ [ firstUndeclared ])}' does not exist. Definition values:\n- In `${toString offending.file}': ${showVal offending.value}";

    # The module system's entry point: { config; options; }.
    evalModules =
      {
        modules,
        specialArgs ? { },
        prefix ? [ ],
      }:
      let
        args = specialArgs // {
          inherit lib config options;
        };
        collected = collectModules args modules;
        options = mergeDeclarations prefix collected;
        freeforms = filter (t: t != null) (map (m: m.freeformType) collected);
        freeform =
          if freeforms == [ ] then null
          else if length freeforms == 1 then head freeforms
          else throw "The option `${showOption prefix}' has more than one freeformType.";
        config = evalTree prefix options freeform (
          map (m: {
            inherit (m) file;
            value = m.config;
          }) collected
        );
      in
      {
        inherit config options;
      };
  };
in
lib
