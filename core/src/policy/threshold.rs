//! The threshold language of `trust.toml`'s `[policy] threshold`.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use crate::nix::is_valid_key_name;

/// Longest threshold text accepted, in bytes.
pub const MAX_THRESHOLD_LEN: usize = 4096;

/// Deepest nesting of `of [..]` lists accepted.
pub const MAX_DEPTH: usize = 16;

/// How many items of a list must be satisfied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Count {
    /// `all of [..]`: every item.
    All,
    /// `any of [..]`: at least one item.
    Any,
    /// `K of [..]`: at least K items (1 ≤ K ≤ the list's length).
    AtLeast(usize),
}

impl Count {
    /// The number of satisfied items needed out of `n`.
    pub fn required(self, n: usize) -> usize {
        match self {
            Count::All => n,
            Count::Any => 1,
            Count::AtLeast(k) => k,
        }
    }
}

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Count::All => f.write_str("all"),
            Count::Any => f.write_str("any"),
            Count::AtLeast(k) => write!(f, "{k}"),
        }
    }
}

/// A parsed threshold expression.
///
/// ```text
/// expr  := NAME | count "of" "[" expr ("," expr)* "]"
/// count := "all" | "any" | K          (K: decimal, 1 ≤ K ≤ number of items, no leading zeros)
/// NAME  := [A-Za-z0-9._-]{1,128}      (a builder name or an operator name)
/// ```
/// Whitespace (spaces, tabs, newlines) may separate tokens. `all of [..]` needs every item,
/// `any of [..]` one, `K of [..]` at least K. Examples: `2 of [alpha, beta, gamma]`,
/// `all of [2 of [alpha, beta, gamma], 1 of [tpm-a, tpm-b]]`.
///
/// A name may appear only once in an expression (so no builder can count twice); whether names
/// resolve to builders or operators is checked by [`TrustPolicy`](super::TrustPolicy), which also
/// refuses two names that would count the same builder.
///
/// [`Display`](fmt::Display) writes the canonical form (`K of [a, b]`, one space after each comma),
/// which parses back to the same value; `all`/`any` are kept as written.
/// Input is bounded: [`MAX_THRESHOLD_LEN`] bytes and [`MAX_DEPTH`] nested lists.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Threshold {
    /// A builder or operator name: satisfied when that builder (or one of the operator's
    /// builders) is among the voters.
    Name(String),
    /// `count of [items]`.
    Of { count: Count, items: Vec<Threshold> },
}

/// What is wrong with a threshold, and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {kind}")]
pub struct ThresholdError {
    /// Byte offset into the threshold text.
    pub offset: usize,
    /// 1-based column (in characters) of `offset`.
    pub column: usize,
    pub kind: ThresholdErrorKind,
}

/// The kinds of [`ThresholdError`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ThresholdErrorKind {
    #[error("the threshold is empty: write e.g. `2 of [alpha, beta, gamma]`")]
    Empty,
    #[error("the threshold is longer than {MAX_THRESHOLD_LEN} bytes")]
    TooLong,
    #[error("lists are nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("unexpected character {0:?}: names use only A-Z a-z 0-9 . _ -")]
    UnexpectedChar(char),
    #[error("expected {expected}, found {found}")]
    Expected {
        expected: &'static str,
        found: String,
    },
    #[error("{0:?} is not a count: write a number such as 2, `all` or `any` before `of`")]
    BadCount(String),
    #[error("`0 of [..]` would trust anything: the count must be at least 1")]
    ZeroCount,
    #[error("`{count} of` a list of {len}: the count cannot exceed the number of items")]
    CountTooLarge { count: usize, len: usize },
    #[error("`of []` lists nothing: name at least one builder or operator")]
    EmptyList,
    #[error("{0:?} is longer than 128 characters")]
    NameTooLong(String),
    #[error("{0:?} appears twice: each builder or operator may be named only once")]
    DuplicateName(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tok<'a> {
    Word(&'a str),
    Open,
    Close,
    Comma,
    End,
}

impl fmt::Display for Tok<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Word(w) => write!(f, "`{w}`"),
            Tok::Open => f.write_str("`[`"),
            Tok::Close => f.write_str("`]`"),
            Tok::Comma => f.write_str("`,`"),
            Tok::End => f.write_str("the end"),
        }
    }
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
    names: BTreeSet<&'a str>,
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"._-".contains(&b)
}

impl<'a> Parser<'a> {
    fn error(&self, offset: usize, kind: ThresholdErrorKind) -> ThresholdError {
        let column = self.src.get(..offset).map_or(offset, |s| s.chars().count()) + 1;
        ThresholdError {
            offset,
            column,
            kind,
        }
    }

    fn skip_ws(&mut self) {
        while let Some(b) = self.src.as_bytes().get(self.pos) {
            if b.is_ascii_whitespace() {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    /// The next token and its start offset, without consuming it.
    fn peek(&mut self) -> Result<(Tok<'a>, usize), ThresholdError> {
        self.skip_ws();
        let start = self.pos;
        let bytes = self.src.as_bytes();
        let Some(&b) = bytes.get(start) else {
            return Ok((Tok::End, start));
        };
        let tok = match b {
            b'[' => Tok::Open,
            b']' => Tok::Close,
            b',' => Tok::Comma,
            b if is_word_byte(b) => {
                let len = bytes[start..]
                    .iter()
                    .take_while(|b| is_word_byte(**b))
                    .count();
                Tok::Word(&self.src[start..start + len])
            }
            _ => {
                let c = self.src[start..].chars().next().unwrap_or('?');
                return Err(self.error(start, ThresholdErrorKind::UnexpectedChar(c)));
            }
        };
        Ok((tok, start))
    }

    fn bump(&mut self, tok: Tok<'_>) {
        self.pos += match tok {
            Tok::Word(w) => w.len(),
            Tok::Open | Tok::Close | Tok::Comma => 1,
            Tok::End => 0,
        };
    }

    fn expect(&mut self, want: Tok<'static>, what: &'static str) -> Result<(), ThresholdError> {
        let (tok, at) = self.peek()?;
        if tok != want {
            return Err(self.error(
                at,
                ThresholdErrorKind::Expected {
                    expected: what,
                    found: tok.to_string(),
                },
            ));
        }
        self.bump(tok);
        Ok(())
    }

    fn expr(&mut self, depth: usize) -> Result<Threshold, ThresholdError> {
        let (tok, at) = self.peek()?;
        let Tok::Word(word) = tok else {
            return Err(self.error(
                at,
                ThresholdErrorKind::Expected {
                    expected: "a name or `K of [..]`",
                    found: tok.to_string(),
                },
            ));
        };
        self.bump(tok);
        let save = self.pos;
        if self.peek()?.0 != Tok::Word("of") {
            self.pos = save;
            if !is_valid_key_name(word) {
                return Err(self.error(at, ThresholdErrorKind::NameTooLong(word.to_owned())));
            }
            if !self.names.insert(word) {
                return Err(self.error(at, ThresholdErrorKind::DuplicateName(word.to_owned())));
            }
            return Ok(Threshold::Name(word.to_owned()));
        }
        self.bump(Tok::Word("of"));
        let count = match word {
            "all" => Count::All,
            "any" => Count::Any,
            "0" => return Err(self.error(at, ThresholdErrorKind::ZeroCount)),
            w if w.bytes().all(|b| b.is_ascii_digit()) && !w.starts_with('0') => Count::AtLeast(
                w.parse()
                    .map_err(|_| self.error(at, ThresholdErrorKind::BadCount(w.to_owned())))?,
            ),
            w => return Err(self.error(at, ThresholdErrorKind::BadCount(w.to_owned()))),
        };
        if depth >= MAX_DEPTH {
            return Err(self.error(at, ThresholdErrorKind::TooDeep));
        }
        self.expect(Tok::Open, "`[` after `of`")?;
        let mut items = Vec::new();
        let (tok, close_at) = self.peek()?;
        if tok == Tok::Close {
            return Err(self.error(close_at, ThresholdErrorKind::EmptyList));
        }
        loop {
            items.push(self.expr(depth + 1)?);
            let (tok, sep_at) = self.peek()?;
            match tok {
                Tok::Comma => self.bump(tok),
                Tok::Close => {
                    self.bump(tok);
                    break;
                }
                _ => {
                    return Err(self.error(
                        sep_at,
                        ThresholdErrorKind::Expected {
                            expected: "`,` or `]`",
                            found: tok.to_string(),
                        },
                    ))
                }
            }
        }
        if let Count::AtLeast(k) = count {
            if k > items.len() {
                return Err(self.error(
                    at,
                    ThresholdErrorKind::CountTooLarge {
                        count: k,
                        len: items.len(),
                    },
                ));
            }
        }
        Ok(Threshold::Of { count, items })
    }
}

impl FromStr for Threshold {
    type Err = ThresholdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut p = Parser {
            src: s,
            pos: 0,
            names: BTreeSet::new(),
        };
        if s.len() > MAX_THRESHOLD_LEN {
            return Err(p.error(0, ThresholdErrorKind::TooLong));
        }
        if s.trim().is_empty() {
            return Err(p.error(0, ThresholdErrorKind::Empty));
        }
        let t = p.expr(0)?;
        let (tok, at) = p.peek()?;
        if tok != Tok::End {
            return Err(p.error(
                at,
                ThresholdErrorKind::Expected {
                    expected: "the end of the threshold",
                    found: tok.to_string(),
                },
            ));
        }
        Ok(t)
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Threshold::Name(n) => f.write_str(n),
            Threshold::Of { count, items } => {
                write!(f, "{count} of [")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    item.fmt(f)?;
                }
                f.write_str("]")
            }
        }
    }
}

impl Threshold {
    /// Whether the expression holds when `name_holds` says which names are satisfied.
    pub fn evaluate(&self, name_holds: &mut dyn FnMut(&str) -> bool) -> bool {
        match self {
            Threshold::Name(n) => name_holds(n),
            Threshold::Of { count, items } => {
                let need = count.required(items.len());
                let mut got = 0;
                for item in items {
                    if item.evaluate(name_holds) {
                        got += 1;
                        if got >= need {
                            return true;
                        }
                    }
                }
                got >= need
            }
        }
    }

    /// Every name in the expression, in order of appearance.
    pub fn names(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.collect_names(&mut out);
        out
    }

    fn collect_names<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Threshold::Name(n) => out.push(n),
            Threshold::Of { items, .. } => items.iter().for_each(|i| i.collect_names(out)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ThresholdErrorKind::*;

    fn err(s: &str) -> (usize, ThresholdErrorKind) {
        let e = s.parse::<Threshold>().unwrap_err();
        (e.column, e.kind)
    }

    #[test]
    fn parses_and_prints_the_design_examples() {
        for s in [
            "2 of [alpha, beta, gamma]",
            "all of [2 of [alpha, beta, gamma], 1 of [tpm-a, tpm-b]]",
            "any of [alpha]",
            "alpha",
            "1 of [a.b_c-d, 0, of, all]",
        ] {
            let t: Threshold = s.parse().unwrap();
            assert_eq!(t.to_string(), s);
        }
        let t: Threshold = " all  of\n[ 2 of[alpha,beta ,gamma],\tany of [x] ] "
            .parse()
            .unwrap();
        assert_eq!(
            t.to_string(),
            "all of [2 of [alpha, beta, gamma], any of [x]]"
        );
        assert_eq!(t.names(), ["alpha", "beta", "gamma", "x"]);
    }

    #[test]
    fn evaluates() {
        let t: Threshold = "all of [2 of [a, b, c], any of [d, e]]".parse().unwrap();
        let eval = |yes: &[&str]| t.evaluate(&mut |n| yes.contains(&n));
        assert!(eval(&["a", "b", "d"]));
        assert!(eval(&["a", "c", "e"]));
        assert!(!eval(&["a", "d", "e"]));
        assert!(!eval(&["a", "b", "c"]));
        assert!(!eval(&[]));
    }

    #[test]
    fn every_error_with_its_column() {
        let cases: Vec<(&str, (usize, ThresholdErrorKind))> = vec![
            ("", (1, Empty)),
            ("   ", (1, Empty)),
            ("0 of [a]", (1, ZeroCount)),
            ("3 of [a, b]", (1, CountTooLarge { count: 3, len: 2 })),
            (
                "all of [a, 3 of [b, c]]",
                (12, CountTooLarge { count: 3, len: 2 }),
            ),
            ("2 of []", (7, EmptyList)),
            ("02 of [a, b]", (1, BadCount("02".into()))),
            ("two of [a, b]", (1, BadCount("two".into()))),
            (
                "99999999999999999999999 of [a]",
                (1, BadCount("99999999999999999999999".into())),
            ),
            (
                "2 of [a, b,]",
                (
                    12,
                    Expected {
                        expected: "a name or `K of [..]`",
                        found: "`]`".into(),
                    },
                ),
            ),
            (
                "2 of [a b]",
                (
                    9,
                    Expected {
                        expected: "`,` or `]`",
                        found: "`b`".into(),
                    },
                ),
            ),
            (
                "2 of [a, b",
                (
                    11,
                    Expected {
                        expected: "`,` or `]`",
                        found: "the end".into(),
                    },
                ),
            ),
            (
                "2 of a",
                (
                    6,
                    Expected {
                        expected: "`[` after `of`",
                        found: "`a`".into(),
                    },
                ),
            ),
            (
                "alpha beta",
                (
                    7,
                    Expected {
                        expected: "the end of the threshold",
                        found: "`beta`".into(),
                    },
                ),
            ),
            ("2 of [alpha, bêta]", (15, UnexpectedChar('ê'))),
            ("2 of [alpha, \"beta\"]", (14, UnexpectedChar('"'))),
            ("2 of [a, any of [b, a]]", (21, DuplicateName("a".into()))),
            (
                &*Box::leak(format!("any of [{}]", "n".repeat(129)).into_boxed_str()),
                (9, NameTooLong("n".repeat(129))),
            ),
        ];
        for (s, want) in cases {
            assert_eq!(err(s), want, "{s:?}");
        }
        let deep = format!(
            "{}a{}",
            "any of [".repeat(MAX_DEPTH + 1),
            "]".repeat(MAX_DEPTH + 1)
        );
        assert_eq!(err(&deep), (MAX_DEPTH * 8 + 1, TooDeep));
        let ok_deep = format!("{}a{}", "any of [".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(ok_deep.parse::<Threshold>().is_ok());
        let long = format!("any of [{}]", vec!["abcdefgh"; 500].join(", "));
        assert_eq!(err(&long), (1, TooLong));
    }

    proptest::proptest! {
        /// Token soup: never a panic; whatever parses prints canonically and parses back equal.
        #[test]
        fn token_soup(tokens in proptest::collection::vec(proptest::sample::select(
            vec!["all", "any", "1", "2", "3", "of", "[", "]", ",", "a", "b", "c", "d"]), 0..24),
            glue in proptest::sample::select(vec!["", " ", "\n"]),
        ) {
            let s = tokens.join(glue);
            if let Ok(t) = s.parse::<Threshold>() {
                let printed = t.to_string();
                proptest::prop_assert_eq!(printed.parse::<Threshold>().unwrap(), t);
            }
        }

        #[test]
        fn arbitrary_unicode(s in ".{0,64}") {
            let _ = s.parse::<Threshold>();
        }
    }
}
