#!/usr/bin/env python3
"""Check provenix envelopes with third-party tools (securesystemslib, in-toto-attestation).

usage: check_intoto.py ENVELOPES.jsonl KEYS.json

ENVELOPES.jsonl: one DSSE envelope (JSON object) per line; lines that are not envelopes (e.g. a
C2SP tlog-proof receipt in an export bundle) may be objects with a "dsseEnvelope" member, which is
checked instead.
KEYS.json: {"<key name>": "<hex of the 32-byte Ed25519 public key>", ...}

For each envelope: the DSSE signature must verify with securesystemslib, and the payload must
parse under in-toto-attestation's strict protobuf models (unknown fields are errors) as a
Statement v1 carrying a SLSA Provenance v1 predicate. Exit 0 only if all pass.
"""
import json
import sys

from google.protobuf import json_format
from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
from in_toto_attestation.v1 import statement_pb2
from in_toto_attestation.v1.resource_descriptor import ResourceDescriptor
from in_toto_attestation.v1.statement import Statement
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey

SLSA_V1 = "https://slsa.dev/provenance/v1"


def check(env_dict, keys):
    env = Envelope.from_dict(env_dict)
    if env.payload_type != "application/vnd.in-toto+json":
        raise ValueError(f"payloadType {env.payload_type!r}")
    sig_keyids = [s.keyid for s in env.signatures.values()]
    candidates = [keys[k] for k in sig_keyids if k in keys]
    if not candidates:
        raise ValueError(f"no key for keyids {sig_keyids}")
    env.verify(candidates, 1)  # raises VerificationError

    payload = env.payload.decode("utf-8")
    stmt_pb = json_format.Parse(payload, statement_pb2.Statement())  # strict: unknown fields raise
    Statement.copy_from_pb(stmt_pb).validate()
    if stmt_pb.predicate_type != SLSA_V1:
        raise ValueError(f"predicateType {stmt_pb.predicate_type!r}")
    predicate = json.loads(payload)["predicate"]
    prov = json_format.ParseDict(predicate, provenance_pb2.Provenance())  # strict
    bd, rd = prov.build_definition, prov.run_details
    if not bd.build_type:
        raise ValueError("buildDefinition.buildType missing")
    if not rd.builder.id:
        raise ValueError("runDetails.builder.id missing")
    for d in list(bd.resolved_dependencies) + list(rd.byproducts):
        ResourceDescriptor.copy_from_pb(d).validate()
    return len(stmt_pb.subject)


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[2]) as f:
        keys = {
            name: SSlibKey(keyid=name, keytype="ed25519", scheme="ed25519", keyval={"public": pub})
            for name, pub in json.load(f).items()
        }
    n = 0
    with open(sys.argv[1]) as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            obj = json.loads(line)
            if "dsseEnvelope" in obj:
                obj = obj["dsseEnvelope"]
            elif "payload" not in obj:
                continue
            try:
                subjects = check(obj, keys)
            except Exception as e:  # report which line failed and why
                print(f"line {lineno}: {type(e).__name__}: {e}", file=sys.stderr)
                return 1
            n += 1
            print(f"line {lineno}: DSSE signature verified (securesystemslib), "
                  f"Statement v1 + SLSA Provenance v1 parsed strictly, {subjects} subject(s)")
    if n == 0:
        print("no envelopes found", file=sys.stderr)
        return 1
    print(f"ok: {n} envelope(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
