#!/usr/bin/env python3
"""Builds the seed corpus of every fuzz target in fuzz/corpus/<target>/ (not in git).

Sources: the small hand-written seeds in fuzz/seeds/<target>/ (files ending in .tmpl have
@PLACEHOLDERS@ filled from the TPM vectors), the narinfo fixtures of core/tests, and the public
vectors in ../shared/vectors (or $PROVENIX_VECTORS) when present -- read at run time, never
copied into the repository.
"""
import base64
import hashlib
import json
import os
import pathlib
import sys

FUZZ = pathlib.Path(__file__).resolve().parent
ROOT = FUZZ.parent
VECTORS = pathlib.Path(os.environ.get("PROVENIX_VECTORS", ROOT.parent / "shared" / "vectors"))
CORPUS = FUZZ / "corpus"


def put(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (d / name).write_bytes(data)


def strings(v):
    if isinstance(v, str):
        yield v
    elif isinstance(v, dict):
        for x in v.values():
            yield from strings(x)
    elif isinstance(v, list):
        for x in v:
            yield from strings(x)


def main():
    targets = sys.argv[1:]
    tpm = VECTORS / "tpm"
    fill = {}
    if (tpm / "gcp.ak.pub").is_file():
        ak = (tpm / "gcp.ak.pub").read_bytes()
        attest = (tpm / "gcp.quote.msg").read_bytes()
        sig = (tpm / "gcp.quote.sig").read_bytes()
        fill = {
            "@GCP_AK_PUBLIC@": base64.b64encode(ak).decode(),
            "@GCP_ATTEST@": base64.b64encode(attest).decode(),
            "@GCP_SIGNATURE@": base64.b64encode(sig).decode(),
            "@GCP_ATTEST_SHA256@": hashlib.sha256(attest).hexdigest(),
            "@GCP_AK_NAME@": "000b" + hashlib.sha256(ak).hexdigest(),
        }
        put("tpm_structures", "gcp.ak.tpmt", ak)
        put("tpm_structures", "gcp.ak.tpm2b", len(ak).to_bytes(2, "big") + ak)
        put("tpm_structures", "gcp.quote.attest", attest)
        put("tpm_structures", "gcp.quote.sig", sig)
        put("tpm_structures", "gcp.sig-check", ak + b"\x5a" + sig + b"\x5a" + attest)
        for log in ("crypto_agile_eventlog", "ubuntu_2104_shielded_vm_no_secure_boot_eventlog", "win.log"):
            if (tpm / log).is_file():
                put("tpm_eventlog", log, (tpm / log).read_bytes())

    def filled(text):
        for k, v in fill.items():
            text = text.replace(k, v)
        return None if "@GCP_" in text else text

    seeds = FUZZ / "seeds"
    for tdir in sorted(p for p in seeds.iterdir() if p.is_dir()):
        for f in sorted(tdir.iterdir()):
            if f.suffix == ".payload":
                continue
            if f.suffix != ".tmpl":
                put(tdir.name, f.name, f.read_bytes())
                continue
            text = filled(f.read_text())
            payload = f.with_name(f.name.split(".")[0] + ".payload")
            if text is not None and "@PAYLOAD@" in text and payload.is_file():
                p = filled(payload.read_text())
                text = None if p is None else text.replace("@PAYLOAD@", base64.b64encode(p.encode()).decode())
            if text is not None:
                put(tdir.name, f.name[: -len(".tmpl")], text)

    # An entry carrying the tpm2-quote byproduct (the signature no longer matches: Entry::parse
    # checks everything but the signature).
    bundle = CORPUS / "tpm_bundle" / "gcp-quote.json"
    if bundle.is_file():
        env = json.loads((seeds / "entry" / "signed-build.json").read_text())
        st = json.loads(base64.b64decode(env["payload"]))
        st["predicate"]["runDetails"]["byproducts"] = [json.loads(bundle.read_text())]
        env["payload"] = base64.b64encode(json.dumps(st, separators=(",", ":")).encode()).decode()
        put("entry", "with-tpm-quote.json", json.dumps(env, separators=(",", ":")))

    for f in sorted((ROOT / "core" / "tests" / "fixtures" / "narinfo").glob("*.narinfo")):
        put("narinfo", f.name, f.read_bytes())

    tlog = VECTORS / "tlog"
    if tlog.is_dir():
        n = 0
        for f in sorted(tlog.rglob("*.json")):
            try:
                doc = json.loads(f.read_text())
            except (ValueError, UnicodeDecodeError):
                continue
            for s in strings(doc):
                if s.startswith("tile/") and len(s) <= 70:
                    put("tile", f"v{n}", s[len("tile/"):])
                elif "\n" in s and len(s) < 8192 and ("\u2014 " in s or s.count("\n") >= 3):
                    put("checkpoint", f"v{n}", s)
                    if "\n\n\u2014 " in s:
                        put("tlog_bodies", f"v{n}", "old 0\n\n" + s)
                elif s.count("+") >= 2 and " " not in s and len(s) < 200:
                    put("checkpoint", f"v{n}", s)
                else:
                    continue
                n += 1

    if targets:
        for t in targets:
            (CORPUS / t).mkdir(parents=True, exist_ok=True)
    for d in sorted(CORPUS.iterdir()):
        if not targets or d.name in targets:
            print(f"{d.name}: {sum(1 for _ in d.iterdir())} corpus files")


if __name__ == "__main__":
    main()
