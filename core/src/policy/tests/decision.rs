//! The acceptance scenarios and the decision's rules, one test each.

use super::*;
use std::collections::{BTreeMap, BTreeSet};

const OUT: &str = "provenix-hello";

fn out() -> StorePath {
    path(OUT)
}

fn content(tag: u8) -> Content {
    [(out(), hash(tag))].into()
}

fn policy_with(
    threshold: &str,
    dissent: DissentRule,
    members: &[(&str, Option<&str>)],
    require_built: bool,
    require_attestation: RequireAttestation,
) -> TrustPolicy {
    let members: BTreeMap<String, Member> = members
        .iter()
        .map(|(n, op)| {
            (
                n.to_string(),
                Member {
                    operator: op.map(str::to_owned),
                    has_tpm: true,
                },
            )
        })
        .collect();
    TrustPolicy::new(
        members,
        threshold.parse().unwrap(),
        dissent,
        require_built,
        require_attestation,
    )
    .unwrap()
}

const ABC: &[(&str, Option<&str>)] = &[("alpha", None), ("beta", None), ("gamma", None)];

fn policy(threshold: &str, dissent: DissentRule) -> TrustPolicy {
    policy_with(threshold, dissent, ABC, true, RequireAttestation::None)
}

fn claim(builder: &str, c: Content) -> Claim {
    Claim {
        builder: builder.into(),
        log: "http://log".into(),
        index: Some(7),
        outputs: c,
        built_locally: true,
        attestation: Attestation::Absent,
    }
}

fn votes(claims: Vec<Claim>) -> Votes {
    Votes {
        path: out(),
        claims,
        rejected: vec![],
        log_failures: vec![],
    }
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn missing(d: &Decision) -> Vec<(&str, MissingCause)> {
    d.missing
        .iter()
        .map(|m| (m.builder.as_str(), m.cause.clone()))
        .collect()
}

fn dissenters(d: &Decision) -> Vec<(&str, bool)> {
    d.dissent
        .iter()
        .map(|x| (x.builder.as_str(), x.eligible))
        .collect()
}

#[test]
fn two_of_three_all_agree_is_trusted() {
    let d = policy("2 of [alpha, beta, gamma]", DissentRule::Veto).decide(&votes(vec![
        claim("alpha", content(1)),
        claim("beta", content(1)),
        claim("gamma", content(1)),
    ]));
    assert_eq!(
        d.verdict,
        Verdict::Trusted {
            outputs: content(1)
        }
    );
    assert_eq!(d.trusted_nar_hash(), Some(&hash(1)));
    assert_eq!(d.agreed, names(&["alpha", "beta", "gamma"]));
    assert!(d.dissent.is_empty() && d.missing.is_empty() && d.reasons.is_empty());
}

#[test]
fn one_builder_only_is_not_trusted() {
    let d = policy("2 of [alpha, beta, gamma]", DissentRule::Veto)
        .decide(&votes(vec![claim("alpha", content(1))]));
    assert_eq!(d.verdict, Verdict::NotTrusted);
    assert!(!d.is_trusted());
    assert_eq!(d.agreed, names(&["alpha"]));
    assert_eq!(
        missing(&d),
        [
            ("beta", MissingCause::NoEntry),
            ("gamma", MissingCause::NoEntry)
        ]
    );
    assert_eq!(
        d.reasons,
        [Reason::ThresholdNotMet {
            threshold: "2 of [alpha, beta, gamma]".into(),
            best: names(&["alpha"])
        }]
    );
}

#[test]
fn nothing_at_all_is_not_trusted() {
    let d = policy("any of [alpha, beta, gamma]", DissentRule::Ignore).decide(&votes(vec![]));
    assert_eq!(d.verdict, Verdict::NotTrusted);
    assert!(d.agreed.is_empty() && d.candidates.is_empty());
    assert_eq!(d.missing.len(), 3);
}

#[test]
fn disagreement_without_quorum() {
    let d = policy("2 of [alpha, beta, gamma]", DissentRule::Ignore).decide(&votes(vec![
        claim("alpha", content(1)),
        claim("beta", content(2)),
    ]));
    assert_eq!(d.verdict, Verdict::NotTrusted);
    // A 1-1 tie has no leading content: nobody "agreed", both contents are listed.
    assert!(d.agreed.is_empty() && d.dissent.is_empty());
    assert_eq!(d.candidates.len(), 2);
    assert!(d
        .candidates
        .iter()
        .all(|c| !c.satisfied && c.voters.len() == 1));
    assert_eq!(missing(&d), [("gamma", MissingCause::NoEntry)]);
}

#[test]
fn all_of_three_with_one_dissenter_is_refused() {
    for t in ["3 of [alpha, beta, gamma]", "all of [alpha, beta, gamma]"] {
        let d = policy(t, DissentRule::Ignore).decide(&votes(vec![
            claim("alpha", content(1)),
            claim("beta", content(1)),
            claim("gamma", content(2)),
        ]));
        assert_eq!(d.verdict, Verdict::NotTrusted, "{t}");
        assert_eq!(d.agreed, names(&["alpha", "beta"]));
        assert_eq!(dissenters(&d), [("gamma", true)]);
    }
}

#[test]
fn veto_two_agree_one_dissents_is_refused() {
    let d = policy("2 of [alpha, beta, gamma]", DissentRule::Veto).decide(&votes(vec![
        claim("alpha", content(1)),
        claim("beta", content(1)),
        claim("gamma", content(2)),
    ]));
    assert_eq!(d.verdict, Verdict::Vetoed);
    assert!(!d.is_trusted());
    assert_eq!(d.agreed, names(&["alpha", "beta"]));
    assert_eq!(dissenters(&d), [("gamma", true)]);
    assert_eq!(d.dissent[0].outputs, content(2));
    assert_eq!(
        d.reasons,
        [Reason::Vetoed {
            by: names(&["gamma"])
        }]
    );
}

#[test]
fn ignore_two_agree_one_dissents_is_accepted() {
    let d = policy("2 of [alpha, beta, gamma]", DissentRule::Ignore).decide(&votes(vec![
        claim("alpha", content(1)),
        claim("beta", content(1)),
        claim("gamma", content(2)),
    ]));
    assert_eq!(
        d.verdict,
        Verdict::Trusted {
            outputs: content(1)
        }
    );
    assert_eq!(dissenters(&d), [("gamma", true)]);
}

#[test]
fn veto_counts_a_dissenter_outside_the_threshold_and_one_that_cannot_vote() {
    let p = policy("2 of [alpha, beta]", DissentRule::Veto);
    let mut g = claim("gamma", content(2));
    g.built_locally = false;
    let d = p.decide(&votes(vec![
        claim("alpha", content(1)),
        claim("beta", content(1)),
        g,
    ]));
    assert_eq!(d.verdict, Verdict::Vetoed);
    assert_eq!(dissenters(&d), [("gamma", false)]);
}

#[test]
fn untrusted_builder_and_broken_signature_never_count() {
    let p = policy("2 of [alpha, beta, gamma]", DissentRule::Veto);
    let mut v = votes(vec![
        claim("alpha", content(1)),
        claim("mallory", content(1)),
    ]);
    v.rejected.push(RejectedEntry {
        builder: Some("beta".into()),
        log: "http://log".into(),
        index: Some(9),
        reason: Rejection::BadSignature,
    });
    v.rejected.push(RejectedEntry {
        builder: Some("gamma".into()),
        log: "http://log".into(),
        index: Some(10),
        reason: Rejection::BadInclusionProof,
    });
    let d = p.decide(&v);
    assert_eq!(d.verdict, Verdict::NotTrusted);
    assert_eq!(d.agreed, names(&["alpha"]));
    assert_eq!(
        missing(&d),
        [
            ("beta", MissingCause::EntriesRejected),
            ("gamma", MissingCause::EntriesRejected)
        ]
    );
    assert!(d.reasons.contains(&Reason::UnknownBuilder {
        builder: "mallory".into(),
        log: "http://log".into(),
        index: Some(7)
    }));
    assert!(d.reasons.contains(&Reason::EntryRejected {
        builder: Some("beta".into()),
        log: "http://log".into(),
        index: Some(9),
        rejection: Rejection::BadSignature
    }));
    // An unknown builder's different claim does not veto either.
    let d = p.decide(&votes(vec![
        claim("alpha", content(1)),
        claim("beta", content(1)),
        claim("mallory", content(2)),
    ]));
    assert_eq!(
        d.verdict,
        Verdict::Trusted {
            outputs: content(1)
        }
    );
}

#[test]
fn operator_counted_once() {
    let members = &[
        ("alpha", Some("acme")),
        ("beta", Some("acme")),
        ("gamma", None),
    ];
    let p = policy_with(
        "2 of [acme, gamma]",
        DissentRule::Veto,
        members,
        true,
        RequireAttestation::None,
    );
    let d = p.decide(&votes(vec![
        claim("alpha", content(1)),
        claim("beta", content(1)),
    ]));
    assert_eq!(d.verdict, Verdict::NotTrusted);
    assert_eq!(d.agreed, names(&["alpha", "beta"]));
    assert_eq!(missing(&d), [("gamma", MissingCause::NoEntry)]);
    let d = p.decide(&votes(vec![
        claim("beta", content(1)),
        claim("gamma", content(1)),
    ]));
    assert_eq!(
        d.verdict,
        Verdict::Trusted {
            outputs: content(1)
        }
    );
    assert_eq!(missing(&d), [("alpha", MissingCause::NoEntry)]);
}

#[test]
fn require_built_and_attestation() {
    let p = policy_with(
        "2 of [alpha, beta, gamma]",
        DissentRule::Veto,
        ABC,
        true,
        RequireAttestation::Builders(["gamma".to_owned()].into()),
    );
    let mut a = claim("alpha", content(1));
    a.built_locally = false;
    let mut g = claim("gamma", content(1));
    g.attestation = Attestation::Failed("PCR 7 differs".into());
    let d = p.decide(&votes(vec![
        a.clone(),
        claim("beta", content(1)),
        g.clone(),
    ]));
    assert_eq!(d.verdict, Verdict::NotTrusted);
    assert_eq!(d.agreed, names(&["beta"]));
    assert_eq!(
        missing(&d),
        [
            ("alpha", MissingCause::NotBuiltLocally),
            (
                "gamma",
                MissingCause::AttestationFailed("PCR 7 differs".into())
            )
        ]
    );
    assert!(d.reasons.contains(&Reason::AttestationFailed {
        builder: "gamma".into(),
        log: "http://log".into(),
        index: Some(7),
        reason: "PCR 7 differs".into()
    }));
    // A verified attestation lets gamma vote; without require-built alpha votes too.
    g.attestation = Attestation::Verified;
    let d = p.decide(&votes(vec![claim("beta", content(1)), g.clone()]));
    assert!(d.is_trusted());
    let lax = policy_with(
        "2 of [alpha, beta, gamma]",
        DissentRule::Veto,
        ABC,
        false,
        RequireAttestation::None,
    );
    assert!(lax
        .decide(&votes(vec![a, claim("beta", content(1))]))
        .is_trusted());
    // Attestation only matters for the listed builders.
    let mut b = claim("beta", content(1));
    b.attestation = Attestation::Failed("anything".into());
    assert!(p.decide(&votes(vec![b, g])).is_trusted());
}

#[test]
fn a_builder_counts_once_per_content() {
    let p = policy("2 of [alpha, beta, gamma]", DissentRule::Veto);
    let mut again = claim("alpha", content(1));
    again.log = "http://other-log".into();
    let d = p.decide(&votes(vec![claim("alpha", content(1)), again]));
    assert_eq!(d.verdict, Verdict::NotTrusted);
    assert_eq!(d.candidates[0].voters, names(&["alpha"]));
}

#[test]
fn a_builder_with_two_contents() {
    // alpha rebuilt and got two different outputs; beta agrees with one of them.
    let claims = vec![
        claim("alpha", content(1)),
        claim("alpha", content(2)),
        claim("beta", content(1)),
    ];
    let self_dis = Reason::SelfDisagreement {
        builder: "alpha".into(),
        contents: 2,
    };
    // Under veto, alpha's other claim dissents against itself.
    let d = policy("2 of [alpha, beta, gamma]", DissentRule::Veto).decide(&votes(claims.clone()));
    assert_eq!(d.verdict, Verdict::Vetoed);
    assert_eq!(dissenters(&d), [("alpha", true)]);
    assert!(d.reasons.contains(&self_dis));
    // Under ignore, its matching claim still counts.
    let d = policy("2 of [alpha, beta, gamma]", DissentRule::Ignore).decide(&votes(claims));
    assert_eq!(
        d.verdict,
        Verdict::Trusted {
            outputs: content(1)
        }
    );
    assert_eq!(d.agreed, names(&["alpha", "beta"]));
    assert_eq!(dissenters(&d), [("alpha", true)]);
    assert!(d.reasons.contains(&self_dis));
}

#[test]
fn contents_must_match_exactly() {
    // Same NAR hash for `out`, but alpha also claims a `dev` output: different contents.
    let mut with_dev = content(1);
    with_dev.insert(path("provenix-hello-dev"), hash(9));
    let d = policy("2 of [alpha, beta, gamma]", DissentRule::Ignore).decide(&votes(vec![
        claim("alpha", with_dev.clone()),
        claim("beta", content(1)),
    ]));
    assert_eq!(d.verdict, Verdict::NotTrusted);
    let d = policy("2 of [alpha, beta, gamma]", DissentRule::Ignore).decide(&votes(vec![
        claim("alpha", with_dev.clone()),
        claim("beta", with_dev.clone()),
    ]));
    assert_eq!(d.verdict, Verdict::Trusted { outputs: with_dev });
}

#[test]
fn two_satisfied_contents_conflict() {
    let d = policy("any of [alpha, beta, gamma]", DissentRule::Ignore).decide(&votes(vec![
        claim("alpha", content(1)),
        claim("beta", content(2)),
    ]));
    assert_eq!(d.verdict, Verdict::Conflict);
    assert_eq!(d.reasons, [Reason::Conflict { candidates: 2 }]);
    assert!(d.agreed.is_empty());
}

#[test]
fn claims_for_another_path_are_ignored() {
    let other: Content = [(path("something-else"), hash(1))].into();
    let d = policy("2 of [alpha, beta, gamma]", DissentRule::Veto).decide(&votes(vec![
        claim("alpha", content(1)),
        claim("beta", other),
    ]));
    assert_eq!(d.verdict, Verdict::NotTrusted);
    assert_eq!(
        missing(&d),
        [
            ("beta", MissingCause::EntriesRejected),
            ("gamma", MissingCause::NoEntry)
        ]
    );
}

#[test]
fn unreachable_logs_are_no_not_abstention() {
    // Only one log answered, with alpha's entry; beta's and gamma's logs are down. 2 of 3 is
    // still needed: never "1 of the 1 that answered".
    let mut v = votes(vec![claim("alpha", content(1))]);
    v.log_failures.push(LogFailure {
        log: "http://log2".into(),
        kind: LogFailureKind::Unreachable("connection refused".into()),
    });
    let d = policy("2 of [alpha, beta, gamma]", DissentRule::Veto).decide(&v);
    assert_eq!(d.verdict, Verdict::NotTrusted);
    assert_eq!(
        d.reasons[0],
        Reason::LogFailed {
            log: "http://log2".into(),
            failure: LogFailureKind::Unreachable("connection refused".into())
        }
    );
}

fn sample_decision() -> Decision {
    let mut v = votes(vec![
        claim("alpha", content(1)),
        claim("beta", content(1)),
        claim("gamma", content(2)),
    ]);
    v.log_failures.push(LogFailure {
        log: "http://log2".into(),
        kind: LogFailureKind::Unreachable("timed out".into()),
    });
    policy("2 of [alpha, beta, gamma]", DissentRule::Veto).decide(&v)
}

#[test]
fn json_form() {
    let d = sample_decision();
    let p = out().to_string();
    let h1 = hash(1).to_nix32_prefixed();
    let h2 = hash(2).to_nix32_prefixed();
    let want = serde_json::json!({
        "path": p,
        "threshold": "2 of [alpha, beta, gamma]",
        "dissentRule": "veto",
        "verdict": {"status": "vetoed"},
        "agreed": ["alpha", "beta"],
        "dissent": [{"builder": "gamma", "outputs": {p.clone(): h2}, "eligible": true}],
        "missing": [],
        "candidates": [
            {"outputs": {p.clone(): h1}, "voters": ["alpha", "beta"], "satisfied": true},
            {"outputs": {p.clone(): h2}, "voters": ["gamma"], "satisfied": false}
        ],
        "reasons": [
            {"code": "log_failed", "log": "http://log2", "failure": {"code": "unreachable", "detail": "timed out"}},
            {"code": "vetoed", "by": ["gamma"]}
        ]
    });
    assert_eq!(serde_json::to_value(&d).unwrap(), want);
    let trusted = policy("2 of [alpha, beta, gamma]", DissentRule::Veto).decide(&votes(vec![
        claim("alpha", content(1)),
        claim("beta", content(1)),
    ]));
    assert_eq!(
        serde_json::to_value(&trusted.verdict).unwrap(),
        serde_json::json!({"status": "trusted", "outputs": {p: h1}})
    );
    assert_eq!(
        serde_json::to_value(&trusted.missing).unwrap(),
        serde_json::json!([{"builder": "gamma", "cause": {"code": "no_entry"}}])
    );
}

#[test]
fn human_form() {
    let d = sample_decision();
    let p = out();
    let want = format!(
        "{p}: NOT TRUSTED (vetoed)
  policy:  2 of [alpha, beta, gamma] (dissent = veto)
  agreed:  alpha, beta
  dissent: gamma claims {p} {}
  reasons:
    - log http://log2: unreachable: timed out
    - vetoed (dissent = \"veto\"): gamma claim other content
",
        hash(2).to_nix32_prefixed()
    );
    assert_eq!(d.to_string(), want);
    let mut v = votes(vec![claim("alpha", content(1)), claim("beta", content(1))]);
    v.rejected.push(RejectedEntry {
        builder: Some("gamma".into()),
        log: "http://log".into(),
        index: Some(3),
        reason: Rejection::BadSignature,
    });
    let d = policy("2 of [alpha, beta, gamma]", DissentRule::Veto).decide(&v);
    let want = format!(
        "{p}: TRUSTED
  policy:  2 of [alpha, beta, gamma] (dissent = veto)
  output:  {p} {}
  agreed:  alpha, beta
  missing: gamma (entries rejected)
  reasons:
    - entry http://log #3 by gamma: rejected, bad signature
",
        hash(1).to_nix32_prefixed()
    );
    assert_eq!(d.to_string(), want);
}

#[test]
fn policy_new_checks_names() {
    let m = |ops: &[(&str, Option<&str>)]| -> BTreeMap<String, Member> {
        ops.iter()
            .map(|(n, o)| {
                (
                    n.to_string(),
                    Member {
                        operator: o.map(str::to_owned),
                        has_tpm: false,
                    },
                )
            })
            .collect()
    };
    let new = |members, t: &str| {
        TrustPolicy::new(
            members,
            t.parse().unwrap(),
            DissentRule::Veto,
            true,
            RequireAttestation::None,
        )
    };
    assert_eq!(
        new(m(&[("a", None)]), "any of [b]").unwrap_err(),
        TrustErrorKind::UnknownName("b".into())
    );
    assert_eq!(
        new(m(&[("a", Some("a"))]), "a").unwrap_err(),
        TrustErrorKind::NameClash("a".into())
    );
    assert_eq!(
        new(m(&[("a", Some("o")), ("b", Some("o"))]), "2 of [a, b]").unwrap_err(),
        TrustErrorKind::CountsTwice {
            first: "a".into(),
            second: "b".into(),
            unit: "operator \"o\"".into()
        }
    );
    let voters: BTreeSet<String> = ["b".to_owned()].into();
    let p = new(
        m(&[("a", Some("o")), ("b", Some("o")), ("c", None)]),
        "any of [o]",
    )
    .unwrap();
    assert!(p.is_satisfied_by(&voters));
}
