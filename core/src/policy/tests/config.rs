//! `trust.toml` parsing: a full valid file, and every refusal with its exact error and location.

use super::*;
use crate::checkpoint::CheckpointError;
use crate::nix::KeyError;
use std::time::Duration;

/// A valid file using every field. `{alpha}` etc. are replaced by real keys.
const FULL: &str = r#"
[[log]]
url = "http://127.0.0.1:8080"
key = "{log}"

[[log]]
url = "https://log2.example"
key = "{log2}"
witnesses = ["{w1}", "{w2}"]
min-witnesses = 1

[[builder]]
name = "alpha"
key = "{alpha}"
operator = "acme"

[[builder]]
name = "beta"
key = "{beta}"

[[builder]]
name = "gamma"
key = "{gamma}"
tpm = { ek-roots = ["/etc/provenix/ek-ca.pem"], pcrs = { "7" = "{pcr}", "0" = "{pcr}" }, allow-unmeasured-boot = true, ak-name = "{ak}" }

[policy]
threshold = "2 of [acme, beta, gamma]"
dissent = "ignore"
require-built = false
require-attestation = ["gamma"]

[substituter]
listen = "[::1]:9000"
upstreams = ["http://127.0.0.1:18071", "https://cache.example"]
signing-key-file = "/var/lib/provenix/substituter.sec"
decision-ttl-secs = 60
negative-ttl-secs = 0
log-timeout-ms = 500
max-concurrent-lookups = 4
state-file = "/var/lib/provenix/state.json"
priority = 10
max-connections = 64
header-timeout-secs = 5
request-timeout-secs = 30
"#;

/// The smallest valid file.
const MINIMAL: &str = r#"[[log]]
url = "http://127.0.0.1:8080"
key = "{log}"

[[builder]]
name = "alpha"
key = "{alpha}"

[[builder]]
name = "beta"
key = "{beta}"

[[builder]]
name = "gamma"
key = "{gamma}"

[policy]
threshold = "2 of [alpha, beta, gamma]"
"#;

fn fill(template: &str) -> String {
    let mut s = template.to_owned();
    for name in ["alpha", "beta", "gamma", "delta"] {
        s = s.replace(&format!("{{{name}}}"), &builder_key(name).to_string());
    }
    s.replace("{log}", &log_key("log.example"))
        .replace("{log2}", &log_key("log2.example"))
        .replace("{w1}", &witness_key("witness1.example"))
        .replace("{w2}", &witness_key("witness2.example"))
        .replace("{pcr}", &"ab".repeat(32))
        .replace("{ak}", &format!("000b{}", "cd".repeat(32)))
}

fn parse(template: &str) -> Result<TrustConfig, TrustError> {
    TrustConfig::parse(&fill(template))
}

/// The error for `template`, which must point at the first occurrence of `marker` (+ `delta`
/// characters).
fn err_at(template: &str, marker: &str, delta: usize) -> TrustErrorKind {
    let text = fill(template);
    let e = TrustConfig::parse(&text).unwrap_err();
    let off = text
        .find(marker)
        .unwrap_or_else(|| panic!("marker {marker:?} not in text"));
    assert_eq!(
        e.location,
        Some(Location::of_offset(&text, off + delta)),
        "location of {e}"
    );
    e.kind
}

#[test]
fn full_file() {
    let c = parse(FULL).unwrap();
    assert_eq!(c.logs.len(), 2);
    assert_eq!(c.logs[0].url, "http://127.0.0.1:8080");
    assert_eq!(c.logs[0].key.name(), "log.example");
    assert!(c.logs[0].witnesses.is_empty());
    assert_eq!(c.logs[0].min_witnesses, 0);
    assert_eq!(c.logs[1].witnesses.len(), 2);
    assert_eq!(c.logs[1].min_witnesses, 1);
    let names: Vec<&str> = c.builders.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["alpha", "beta", "gamma"]);
    assert_eq!(c.builders[0].operator.as_deref(), Some("acme"));
    assert_eq!(c.builders[0].key, builder_key("alpha"));
    let tpm = c.builder("gamma").unwrap().tpm.as_ref().unwrap();
    assert_eq!(tpm.ek_roots, ["/etc/provenix/ek-ca.pem"]);
    assert_eq!(tpm.pcrs.keys().copied().collect::<Vec<_>>(), [0, 7]);
    assert_eq!(tpm.pcrs[&7], [0xab; 32]);
    assert!(tpm.allow_unmeasured_boot);
    assert_eq!(&tpm.ak_name.unwrap()[..2], &[0, 0x0b]);
    let p = &c.policy;
    assert_eq!(p.threshold().to_string(), "2 of [acme, beta, gamma]");
    assert_eq!(p.dissent(), DissentRule::Ignore);
    assert!(!p.require_built());
    assert!(p.require_attestation().requires("gamma"));
    assert!(!p.require_attestation().requires("beta"));
    let s = c.substituter.unwrap();
    assert_eq!(s.listen.to_string(), "[::1]:9000");
    assert_eq!(s.upstreams.len(), 2);
    assert_eq!(s.signing_key_file, "/var/lib/provenix/substituter.sec");
    assert_eq!(s.decision_ttl, Duration::from_secs(60));
    assert_eq!(s.negative_ttl, Duration::ZERO);
    assert_eq!(s.log_timeout, Duration::from_millis(500));
    assert_eq!(s.max_concurrent_lookups, 4);
    assert_eq!(s.max_connections, 64);
    assert_eq!(s.header_timeout, Duration::from_secs(5));
    assert_eq!(s.request_timeout, Duration::from_secs(30));
    assert_eq!(
        s.state_file.as_deref(),
        Some("/var/lib/provenix/state.json")
    );
    assert_eq!(s.priority, 10);
}

#[test]
fn defaults() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.policy.dissent(), DissentRule::Veto);
    assert!(c.policy.require_built());
    assert_eq!(c.policy.require_attestation(), &RequireAttestation::None);
    assert!(c.substituter.is_none());
    let with_sub = format!(
        "{MINIMAL}\n[substituter]\nupstreams = [\"http://127.0.0.1:1\"]\nsigning-key-file = \"k\"\n"
    );
    let s = parse(&with_sub).unwrap().substituter.unwrap();
    assert_eq!(s.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(s.decision_ttl, Duration::from_secs(300));
    assert_eq!(s.negative_ttl, Duration::from_secs(10));
    assert_eq!(s.log_timeout, Duration::from_millis(3000));
    assert_eq!(s.max_concurrent_lookups, 32);
    assert_eq!(s.state_file, None);
    assert_eq!(s.priority, 30);
    assert_eq!(s.max_connections, 1024);
    assert_eq!(s.header_timeout, Duration::from_secs(10));
    assert_eq!(s.request_timeout, Duration::from_secs(60));
}

#[test]
fn the_design_example_parses() {
    // DESIGN.md §7, with real keys and `tpm` on the builder it describes.
    let text = r#"
[[log]]
url = "http://127.0.0.1:8080"
key = "{log}"

[[builder]]
name = "alpha"
key = "{alpha}"
operator = "acme"
tpm = { ek-roots = ["/etc/provenix/ek-ca.pem"], pcrs = { "7" = "{pcr}" }, allow-unmeasured-boot = false }

[[builder]]
name = "beta"
key = "{beta}"

[[builder]]
name = "gamma"
key = "{gamma}"

[policy]
threshold = "2 of [alpha, beta, gamma]"
dissent = "ignore"
require-built = true
require-attestation = false

[substituter]
listen = "127.0.0.1:37515"
upstreams = ["http://127.0.0.1:18071"]
signing-key-file = "/var/lib/provenix/substituter.sec"
"#;
    let c = parse(text).unwrap();
    assert_eq!(c.builders.len(), 3);
}

#[test]
fn unknown_fields_are_refused_where_they_are() {
    let e = err_at(
        &MINIMAL.replace("name = \"beta\"", "nmae = \"beta\""),
        "nmae",
        0,
    );
    assert_eq!(
        e,
        TrustErrorKind::UnknownField {
            field: "nmae".into(),
            expected: "one of `name`, `key`, `operator`, `tpm`".into()
        }
    );
    let e = err_at(
        &MINIMAL.replace("[policy]\n", "[policy]\nrequire-build = true\n"),
        "require-build",
        0,
    );
    assert_eq!(
        e,
        TrustErrorKind::UnknownField {
            field: "require-build".into(),
            expected: "one of `threshold`, `dissent`, `require-built`, `require-attestation`"
                .into()
        }
    );
    let e = err_at(
        &format!("{MINIMAL}[substituter]\nupstreams = [\"http://x\"]\nsigning-key-file = \"k\"\nttl = 5\n"),
        "ttl = 5",
        0,
    );
    assert!(
        matches!(&e, TrustErrorKind::UnknownField { field, .. } if field == "ttl"),
        "{e}"
    );
    let e = err_at(
        &MINIMAL.replace(
            "name = \"gamma\"",
            "name = \"gamma\"\ntpm = { ek-roots = [\"r\"], pcr = {} }",
        ),
        "pcr =",
        0,
    );
    assert!(
        matches!(&e, TrustErrorKind::UnknownField { field, .. } if field == "pcr"),
        "{e}"
    );
    let e = err_at(&format!("{MINIMAL}[polcy]\n"), "polcy", 0);
    assert_eq!(
        e,
        TrustErrorKind::UnknownField {
            field: "polcy".into(),
            expected: "one of `log`, `builder`, `policy`, `substituter`".into()
        }
    );
    // Display: location first, then what to do.
    let text = fill(&MINIMAL.replace("name = \"beta\"", "nmae = \"beta\""));
    let msg = TrustConfig::parse(&text).unwrap_err().to_string();
    assert_eq!(
        msg,
        "line 10, column 1: unknown field `nmae` (expected one of `name`, `key`, `operator`, `tpm`): fix its spelling or remove it"
    );
}

#[test]
fn toml_and_type_errors() {
    let big = format!("{}\n", "#".repeat(MAX_TRUST_TOML_BYTES));
    assert_eq!(
        TrustConfig::parse(&big).unwrap_err(),
        TrustError::from(TrustErrorKind::FileTooLarge(MAX_TRUST_TOML_BYTES + 1))
    );
    let e = err_at(&MINIMAL.replace("[policy]", "[policy"), "[policy", 7);
    assert!(matches!(e, TrustErrorKind::Toml(_)), "{e}");
    let e = err_at(
        &MINIMAL.replace("[policy]\n", "[policy]\ndissent = \"vetoo\"\n"),
        "\"vetoo\"",
        0,
    );
    assert_eq!(
        e,
        TrustErrorKind::Toml("unknown variant `vetoo`, expected `ignore` or `veto`".into())
    );
    let e = parse(&MINIMAL.replace("[policy]\nthreshold = \"2 of [alpha, beta, gamma]\"\n", ""))
        .unwrap_err();
    assert_eq!(
        e.kind,
        TrustErrorKind::Toml("missing field `policy`".into())
    );
    let e = err_at(
        &MINIMAL.replace("[policy]\n", "[policy]\nrequire-built = \"yes\"\n"),
        "\"yes\"",
        0,
    );
    assert!(matches!(e, TrustErrorKind::Toml(_)), "{e}");
}

#[test]
fn log_errors() {
    use TrustErrorKind::*;
    let no_logs = MINIMAL.replacen(
        "[[log]]\nurl = \"http://127.0.0.1:8080\"\nkey = \"{log}\"\n",
        "",
        1,
    );
    assert_eq!(parse(&no_logs).unwrap_err(), TrustError::from(NoLogs));
    assert_eq!(
        err_at(
            &MINIMAL.replace("http://127.0.0.1:8080", "ftp://x"),
            "\"ftp://x\"",
            0
        ),
        BadLogUrl("ftp://x".into())
    );
    assert_eq!(
        err_at(
            &MINIMAL.replace("key = \"{log}\"", "key = \"nope\""),
            "\"nope\"",
            0
        ),
        BadLogKey(CheckpointError::BadVerifierKey)
    );
    let dup = MINIMAL.replacen(
        "[[builder]]",
        "[[log]]\nurl = \"http://other\"\nkey = \"{log}\"\n\n[[builder]]",
        1,
    );
    let text = fill(&dup);
    let second_key = text.match_indices("key = \"log.example").nth(1).unwrap().0;
    let e = TrustConfig::parse(&text).unwrap_err();
    assert_eq!(e.kind, DuplicateLog("log.example".into()));
    assert_eq!(e.location, Some(Location::of_offset(&text, second_key + 6)));

    let with =
        |w: &str| MINIMAL.replacen("key = \"{log}\"\n", &format!("key = \"{{log}}\"\n{w}\n"), 1);
    assert_eq!(
        err_at(&with("witnesses = []"), "[]", 0),
        EmptyList { field: "witnesses" }
    );
    assert_eq!(
        err_at(&with("witnesses = [\"{w1}\"]\nmin-witnesses = 2"), "2\n", 0),
        TooLarge {
            field: "min-witnesses",
            k: 2,
            n: 1
        }
    );
    assert_eq!(
        err_at(&with("witnesses = [\"{w1}\"]\nmin-witnesses = 0"), "0\n", 0),
        Zero {
            field: "min-witnesses"
        }
    );
    assert_eq!(
        err_at(&with("min-witnesses = 1"), "1\n", 0),
        MinWitnessesWithoutWitnesses
    );
    assert_eq!(
        err_at(&with("witnesses = [\"w+1+2\"]"), "[\"w+1+2\"]", 0),
        BadWitnessKey("w+1+2".into())
    );
    // A note (log) key is not a cosignature key: witnesses sign with type 0x04.
    let note_key = log_key("notawitness.example");
    assert_eq!(
        err_at(
            &with(&format!("witnesses = [\"{note_key}\"]")),
            "[\"notawitness",
            0
        ),
        BadWitnessKey(note_key)
    );
    assert_eq!(
        err_at(&with("witnesses = [\"{w1}\", \"{w1}\"]"), "[\"witness1", 0),
        Duplicate {
            field: "witnesses",
            name: witness_key("witness1.example")
        }
    );
    // Defaults to all listed witnesses.
    let c = parse(&with("witnesses = [\"{w1}\", \"{w2}\"]")).unwrap();
    assert_eq!(c.logs[0].min_witnesses, 2);
}

#[test]
fn builder_errors() {
    use TrustErrorKind::*;
    assert_eq!(
        err_at(
            &MINIMAL.replace("name = \"beta\"", "name = \"be ta\""),
            "\"be ta\"",
            0
        ),
        BadName {
            field: "builder",
            name: "be ta".into()
        }
    );
    assert_eq!(
        err_at(
            &MINIMAL.replace("key = \"{beta}\"", "key = \"beta:AAAA\""),
            "\"beta:AAAA\"",
            0
        ),
        BadBuilderKey {
            builder: "beta".into(),
            error: KeyError::Length(32)
        }
    );
    assert_eq!(
        err_at(
            &MINIMAL.replace("key = \"{beta}\"", "key = \"{delta}\""),
            "\"delta:",
            0
        ),
        KeyNameMismatch {
            builder: "beta".into(),
            key_name: "delta".into()
        }
    );
    let dup = MINIMAL.replace(
        "name = \"gamma\"\nkey = \"{gamma}\"",
        "name = \"beta\"\nkey = \"{beta}\"",
    );
    let text = fill(&dup);
    let second = text.match_indices("name = \"beta\"").nth(1).unwrap().0;
    let e = TrustConfig::parse(&text).unwrap_err();
    assert_eq!(e.kind, DuplicateBuilder("beta".into()));
    assert_eq!(e.location, Some(Location::of_offset(&text, second + 7)));
    assert_eq!(
        err_at(
            &MINIMAL.replace("name = \"beta\"", "name = \"beta\"\noperator = \"a/b\""),
            "\"a/b\"",
            0
        ),
        BadName {
            field: "operator",
            name: "a/b".into()
        }
    );
    assert_eq!(
        err_at(
            &MINIMAL.replace("name = \"beta\"", "name = \"beta\"\noperator = \"gamma\""),
            "\"gamma\"\n",
            0
        ),
        NameClash("gamma".into())
    );
}

#[test]
fn tpm_errors() {
    use TrustErrorKind::*;
    let with =
        |t: &str| MINIMAL.replace("name = \"gamma\"", &format!("name = \"gamma\"\ntpm = {t}"));
    assert_eq!(
        err_at(&with("{ ek-roots = [] }"), "[]", 0),
        EmptyList { field: "ek-roots" }
    );
    assert_eq!(
        err_at(&with("{ ek-roots = [\"\"] }"), "[\"\"]", 0),
        EmptyString("ek-roots")
    );
    assert_eq!(
        err_at(
            &with("{ ek-roots = [\"r\"], pcrs = { \"24\" = \"{pcr}\" } }"),
            "{ ek-roots",
            0
        ),
        BadPcrIndex {
            builder: "gamma".into(),
            index: "24".into()
        }
    );
    assert_eq!(
        err_at(
            &with("{ ek-roots = [\"r\"], pcrs = { \"07\" = \"{pcr}\" } }"),
            "{ ek-roots",
            0
        ),
        BadPcrIndex {
            builder: "gamma".into(),
            index: "07".into()
        }
    );
    assert_eq!(
        err_at(
            &with("{ ek-roots = [\"r\"], pcrs = { \"7\" = \"abcd\" } }"),
            "{ ek-roots",
            0
        ),
        BadPcrValue {
            builder: "gamma".into(),
            index: 7
        }
    );
    assert_eq!(
        err_at(
            &with("{ ek-roots = [\"r\"], ak-name = \"0004ab\" }"),
            "\"0004ab\"",
            0
        ),
        BadAkName {
            builder: "gamma".into()
        }
    );
}

#[test]
fn threshold_errors_point_into_the_string() {
    use TrustErrorKind::*;
    let with = |t: &str| MINIMAL.replace("2 of [alpha, beta, gamma]", t);
    let th = |e: TrustErrorKind| match e {
        Threshold(t) => t.kind,
        other => panic!("not a threshold error: {other}"),
    };
    assert_eq!(
        th(err_at(&with("3 of [alpha, beta]"), "3 of", 0)),
        ThresholdErrorKind::CountTooLarge { count: 3, len: 2 }
    );
    assert_eq!(
        th(err_at(&with("4 of [alpha, beta, gamma]"), "4 of", 0)),
        ThresholdErrorKind::CountTooLarge { count: 4, len: 3 }
    );
    assert_eq!(
        th(err_at(&with("all of [alpha, 2 of []]"), "[]]", 1)),
        ThresholdErrorKind::EmptyList
    );
    assert_eq!(
        th(err_at(&with("0 of [alpha]"), "0 of", 0)),
        ThresholdErrorKind::ZeroCount
    );
    assert_eq!(
        err_at(&with("2 of [alpha, beta, delta]"), "delta]", 0),
        UnknownName("delta".into())
    );
    assert_eq!(
        err_at(&with("2 of [alpha, beta, acme]"), "acme]", 0),
        UnknownName("acme".into())
    );
    let text = fill(&with("2 of [alpha, beta, 0 of [gamma]]"));
    assert_eq!(
        TrustConfig::parse(&text).unwrap_err().to_string(),
        "line 18, column 33: invalid threshold: `0 of [..]` would trust anything: the count must be \
         at least 1 (character 20 of the expression)"
    );
    // In a multi-line string the location is the string's start.
    let ml = MINIMAL.replace(
        "threshold = \"2 of [alpha, beta, gamma]\"",
        "threshold = \"\"\"\n3 of [alpha, beta]\n\"\"\"\n# end",
    );
    let text = fill(&ml);
    let e = TrustConfig::parse(&text).unwrap_err();
    assert_eq!(
        e.location,
        Some(Location::of_offset(&text, text.find("\"\"\"").unwrap()))
    );
    let ok = ml.replace(
        "3 of [alpha, beta]",
        "2 of [\n  alpha,\n  beta,\n  gamma\n]",
    );
    assert_eq!(
        parse(&ok).unwrap().policy.threshold().to_string(),
        "2 of [alpha, beta, gamma]"
    );
}

#[test]
fn operators_count_once() {
    use TrustErrorKind::*;
    let ops = MINIMAL
        .replace("name = \"alpha\"", "name = \"alpha\"\noperator = \"acme\"")
        .replace("name = \"beta\"", "name = \"beta\"\noperator = \"acme\"");
    let with = |t: &str| ops.replace("2 of [alpha, beta, gamma]", t);
    assert_eq!(
        err_at(&with("2 of [alpha, beta, gamma]"), "beta, gamma]", 0),
        CountsTwice {
            first: "alpha".into(),
            second: "beta".into(),
            unit: "operator \"acme\"".into()
        }
    );
    assert_eq!(
        err_at(
            &with("2 of [acme, any of [alpha, gamma]]"),
            "alpha, gamma]",
            0
        ),
        CountsTwice {
            first: "acme".into(),
            second: "alpha".into(),
            unit: "operator \"acme\"".into()
        }
    );
    assert!(parse(&with("2 of [acme, gamma]")).is_ok());
    assert!(parse(&with("2 of [alpha, gamma]")).is_ok());
    // The same name twice is a threshold syntax error.
    assert_eq!(
        err_at(
            &MINIMAL.replace("2 of [alpha, beta, gamma]", "2 of [alpha, beta, alpha]"),
            "alpha]",
            0
        ),
        Threshold(crate::policy::ThresholdError {
            offset: 19,
            column: 20,
            kind: ThresholdErrorKind::DuplicateName("alpha".into())
        })
    );
}

#[test]
fn require_attestation_errors() {
    use TrustErrorKind::*;
    let with = |v: &str| {
        MINIMAL
            .replace(
                "name = \"gamma\"",
                "name = \"gamma\"\ntpm = { ek-roots = [\"r\"] }",
            )
            .replace(
                "[policy]\n",
                &format!("[policy]\nrequire-attestation = {v}\n"),
            )
    };
    assert_eq!(
        err_at(&with("[\"delta\"]"), "[\"delta\"]", 0),
        AttestationUnknownBuilder("delta".into())
    );
    assert_eq!(
        err_at(&with("[\"gamma\", \"beta\"]"), "[\"gamma\"", 0),
        AttestationWithoutTpm("beta".into())
    );
    assert_eq!(
        err_at(&with("true"), "true", 0),
        AttestationWithoutTpm("alpha".into())
    );
    assert_eq!(
        err_at(&with("[]"), "[]", 0),
        EmptyList {
            field: "require-attestation"
        }
    );
    assert_eq!(
        err_at(&with("[\"gamma\", \"gamma\"]"), "[\"gamma\"", 0),
        Duplicate {
            field: "require-attestation",
            name: "gamma".into()
        }
    );
    assert_eq!(
        err_at(&with("\"gamma\""), "require-attestation = ", 22),
        BadRequireAttestation
    );
    assert_eq!(err_at(&with("[1]"), "[1]", 0), BadRequireAttestation);
    let ok = parse(&with("[\"gamma\"]")).unwrap();
    assert!(ok.policy.require_attestation().requires("gamma"));
}

#[test]
fn substituter_errors() {
    use TrustErrorKind::*;
    let with = |body: &str| format!("{MINIMAL}\n[substituter]\n{body}\n");
    let base = "upstreams = [\"http://127.0.0.1:1\"]\nsigning-key-file = \"k\"";
    assert_eq!(
        err_at(
            &with(&format!("{base}\nlisten = \"localhost\"")),
            "\"localhost\"",
            0
        ),
        BadListen("localhost".into())
    );
    assert_eq!(
        err_at(&with("upstreams = []\nsigning-key-file = \"k\""), "[]", 0),
        EmptyList { field: "upstreams" }
    );
    assert_eq!(
        err_at(
            &with("upstreams = [\"http://a\", \"file:///x\"]\nsigning-key-file = \"k\""),
            "\"file:",
            0
        ),
        BadUpstreamUrl("file:///x".into())
    );
    assert_eq!(
        err_at(
            &with("upstreams = [\"http://a\", \"http://a\"]\nsigning-key-file = \"k\""),
            "\"http://a\"]",
            0
        ),
        Duplicate {
            field: "upstreams",
            name: "http://a".into()
        }
    );
    assert_eq!(
        err_at(
            &with("upstreams = [\"http://a\"]\nsigning-key-file = \"\""),
            "\"\"",
            0
        ),
        EmptyString("signing-key-file")
    );
    assert_eq!(
        err_at(
            &with(&format!("{base}\nmax-concurrent-lookups = 0")),
            "0\n",
            0
        ),
        Zero {
            field: "max-concurrent-lookups"
        }
    );
    for field in [
        "max-connections",
        "header-timeout-secs",
        "request-timeout-secs",
    ] {
        assert_eq!(
            err_at(&with(&format!("{base}\n{field} = 0")), "0\n", 0),
            Zero { field }
        );
    }
    assert_eq!(
        err_at(&with(&format!("{base}\nlog-timeout-ms = 0")), "0\n", 0),
        Zero {
            field: "log-timeout-ms"
        }
    );
    let e = parse(&with("upstreams = [\"http://a\"]")).unwrap_err();
    assert_eq!(e.kind, Toml("missing field `signing-key-file`".into()));
}
