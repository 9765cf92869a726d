# All of provenix's NixOS modules; each does nothing until its `enable` is set.
{
  imports = [
    ./log.nix
    ./builder.nix
    ./substituter.nix
  ];
}
