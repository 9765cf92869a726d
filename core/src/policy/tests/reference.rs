//! Property test: the real parser + policy + decision against a tiny reference evaluator that
//! restates DESIGN.md §7 directly over the generated expression (no parsing, no candidates, no
//! bookkeeping), on random expressions, operators, flags and vote sets.

use super::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

const BUILDERS: usize = 6;
const OPERATORS: [&str; 2] = ["op0", "op1"];

fn bname(i: usize) -> String {
    format!("b{i}")
}

/// The reference expression: a leaf covers a set of builders (one builder, or all of an
/// operator's); a list needs `k` of its items.
#[derive(Clone, Debug)]
enum Ref {
    Leaf {
        name: String,
        covers: BTreeSet<String>,
    },
    Of {
        k: usize,
        spelling: Count,
        items: Vec<Ref>,
    },
}

impl Ref {
    fn eval(&self, voters: &BTreeSet<String>) -> bool {
        match self {
            Ref::Leaf { covers, .. } => covers.iter().any(|b| voters.contains(b)),
            Ref::Of { k, items, .. } => items.iter().filter(|i| i.eval(voters)).count() >= *k,
        }
    }

    fn print(&self) -> String {
        match self {
            Ref::Leaf { name, .. } => name.clone(),
            Ref::Of {
                spelling, items, ..
            } => format!(
                "{spelling} of [{}]",
                items.iter().map(Ref::print).collect::<Vec<_>>().join(", ")
            ),
        }
    }
}

#[derive(Clone, Debug)]
enum Shape {
    Leaf,
    Node(Vec<Shape>, u8, u8),
}

fn shape() -> impl Strategy<Value = Shape> {
    Just(Shape::Leaf).prop_recursive(3, 12, 4, |inner| {
        (prop::collection::vec(inner, 1..5), any::<u8>(), any::<u8>())
            .prop_map(|(v, k, s)| Shape::Node(v, k, s))
    })
}

fn leaves(s: &Shape) -> usize {
    match s {
        Shape::Leaf => 1,
        Shape::Node(v, ..) => v.iter().map(leaves).sum(),
    }
}

/// Builds the reference tree, taking leaf names from `names` in order.
fn build(s: &Shape, names: &mut impl Iterator<Item = (String, BTreeSet<String>)>) -> Ref {
    match s {
        Shape::Leaf => {
            let (name, covers) = names.next().unwrap_or_default();
            Ref::Leaf { name, covers }
        }
        Shape::Node(items, kseed, sseed) => {
            let items: Vec<Ref> = items.iter().map(|i| build(i, names)).collect();
            let n = items.len();
            let k = 1 + usize::from(*kseed) % n;
            let spelling = match (k == n, k == 1, sseed % 3) {
                (true, _, 0) => Count::All,
                (_, true, 1) => Count::Any,
                _ => Count::AtLeast(k),
            };
            Ref::Of { k, spelling, items }
        }
    }
}

#[derive(Clone, Debug)]
struct RawClaim {
    builder: usize, // BUILDERS = an unknown builder
    content: usize,
    built: bool,
    attestation: u8,
    wrong_path: bool,
}

fn raw_claim() -> impl Strategy<Value = RawClaim> {
    (
        0..=BUILDERS,
        0..3usize,
        any::<bool>(),
        0..3u8,
        prop::bool::weighted(0.05),
    )
        .prop_map(
            |(builder, content, built, attestation, wrong_path)| RawClaim {
                builder,
                content,
                built,
                attestation,
                wrong_path,
            },
        )
}

fn contents() -> [Content; 3] {
    let out = path("provenix-prop");
    let dev = path("provenix-prop-dev");
    [
        [(out.clone(), hash(1))].into(),
        [(out.clone(), hash(2))].into(),
        [(out, hash(1)), (dev, hash(3))].into(),
    ]
}

fn attestation(a: u8) -> Attestation {
    match a {
        0 => Attestation::Verified,
        1 => Attestation::Absent,
        _ => Attestation::Failed("quote does not verify".into()),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum RefVerdict {
    Trusted(usize),
    NotTrusted,
    Vetoed,
    Conflict,
}

#[allow(clippy::too_many_arguments)]
fn reference(
    tree: &Ref,
    claims: &[RawClaim],
    veto: bool,
    require_built: bool,
    needs_attestation: &dyn Fn(&str) -> bool,
) -> RefVerdict {
    let counted: Vec<&RawClaim> = claims
        .iter()
        .filter(|c| c.builder < BUILDERS && !c.wrong_path)
        .collect();
    let satisfied: Vec<usize> = (0..3)
        .filter(|&content| {
            let voters: BTreeSet<String> = counted
                .iter()
                .filter(|c| c.content == content)
                .filter(|c| !require_built || c.built)
                .filter(|c| !needs_attestation(&bname(c.builder)) || c.attestation == 0)
                .map(|c| bname(c.builder))
                .collect();
            tree.eval(&voters)
        })
        .collect();
    match satisfied.as_slice() {
        [] => RefVerdict::NotTrusted,
        [c] if veto && counted.iter().any(|x| x.content != *c) => RefVerdict::Vetoed,
        [c] => RefVerdict::Trusted(*c),
        _ => RefVerdict::Conflict,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn decision_matches_the_reference(
        shape in shape(),
        operators in prop::collection::vec(0..3usize, BUILDERS),
        order in prop::collection::vec(any::<u32>(), BUILDERS + OPERATORS.len()),
        name_pick in prop::collection::vec(any::<u8>(), OPERATORS.len()),
        claims in prop::collection::vec(raw_claim(), 0..14),
        veto in any::<bool>(),
        require_built in any::<bool>(),
        ra_mode in 0..3u8,
        tpm_mask in any::<u8>(),
        ra_mask in any::<u8>(),
        rejected in prop::collection::vec(0..=BUILDERS, 0..3),
    ) {
        // Units: each operator in use, and each builder without one. A leaf names the unit:
        // an operator by its name or by one of its builders (which then counts alone).
        let op_of = |b: usize| (operators[b] < OPERATORS.len()).then(|| OPERATORS[operators[b]]);
        let mut units: Vec<(u32, String, BTreeSet<String>)> = Vec::new();
        for (i, op) in OPERATORS.iter().enumerate() {
            let members: Vec<String> =
                (0..BUILDERS).filter(|b| op_of(*b) == Some(op)).map(bname).collect();
            if members.is_empty() {
                continue;
            }
            let pick = usize::from(name_pick[i]) % (members.len() + 1);
            let (name, covers) = if pick == members.len() {
                (op.to_string(), members.iter().cloned().collect())
            } else {
                (members[pick].clone(), [members[pick].clone()].into())
            };
            units.push((order[BUILDERS + i], name, covers));
        }
        for b in (0..BUILDERS).filter(|b| op_of(*b).is_none()) {
            units.push((order[b], bname(b), [bname(b)].into()));
        }
        prop_assume!(leaves(&shape) <= units.len());
        units.sort();
        let tree = build(&shape, &mut units.into_iter().map(|(_, n, c)| (n, c)));
        let text = tree.print();

        // The parser reads the printed form back, and prints it the same way.
        let threshold: Threshold = text.parse().unwrap();
        prop_assert_eq!(&threshold.to_string(), &text);
        let spaced = text.replace(", ", " ,\n\t").replace(" of [", "\nof[ ");
        prop_assert_eq!(&spaced.parse::<Threshold>().unwrap(), &threshold);

        let require_attestation = match ra_mode {
            0 => RequireAttestation::None,
            1 => RequireAttestation::All,
            _ => {
                let set: BTreeSet<String> = (0..BUILDERS)
                    .filter(|b| (ra_mask & tpm_mask) >> b & 1 == 1)
                    .map(bname)
                    .collect();
                if set.is_empty() { RequireAttestation::None } else { RequireAttestation::Builders(set) }
            }
        };
        let members: BTreeMap<String, Member> = (0..BUILDERS)
            .map(|b| {
                (bname(b), Member {
                    operator: op_of(b).map(str::to_owned),
                    has_tpm: ra_mode == 1 || tpm_mask >> b & 1 == 1,
                })
            })
            .collect();
        let dissent = if veto { DissentRule::Veto } else { DissentRule::Ignore };
        let policy = TrustPolicy::new(
            members,
            threshold,
            dissent,
            require_built,
            require_attestation.clone(),
        )
        .unwrap();

        let cs = contents();
        let votes = Votes {
            path: path("provenix-prop"),
            claims: claims
                .iter()
                .map(|c| Claim {
                    builder: if c.builder < BUILDERS { bname(c.builder) } else { "mallory".into() },
                    log: "http://log".into(),
                    index: None,
                    outputs: if c.wrong_path {
                        [(path("other"), hash(1))].into()
                    } else {
                        cs[c.content].clone()
                    },
                    built_locally: c.built,
                    attestation: attestation(c.attestation),
                })
                .collect(),
            rejected: rejected
                .iter()
                .map(|b| RejectedEntry {
                    builder: Some(bname(*b)),
                    log: "http://log".into(),
                    index: None,
                    reason: Rejection::BadSignature,
                })
                .collect(),
            log_failures: vec![],
        };
        let d = policy.decide(&votes);
        let want = reference(&tree, &claims, veto, require_built, &|b| {
            require_attestation.requires(b)
        });
        let got = match &d.verdict {
            Verdict::Trusted { outputs } => {
                RefVerdict::Trusted(cs.iter().position(|c| c == outputs).unwrap())
            }
            Verdict::NotTrusted => RefVerdict::NotTrusted,
            Verdict::Vetoed => RefVerdict::Vetoed,
            Verdict::Conflict => RefVerdict::Conflict,
        };
        prop_assert_eq!(got, want, "threshold {}\n{}", text, d);

        // Bookkeeping invariants.
        let agreed: BTreeSet<&String> = d.agreed.iter().collect();
        prop_assert_eq!(agreed.len(), d.agreed.len());
        for m in &d.missing {
            prop_assert!(!agreed.contains(&m.builder));
            prop_assert!(d.dissent.iter().all(|x| x.builder != m.builder));
        }
        prop_assert!(d.agreed.iter().chain(d.missing.iter().map(|m| &m.builder))
            .all(|b| policy.members().contains_key(b)));
        if d.is_trusted() {
            let voters: BTreeSet<String> = d.agreed.iter().cloned().collect();
            prop_assert!(policy.is_satisfied_by(&voters));
        }
    }
}
