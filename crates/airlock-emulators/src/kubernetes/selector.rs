//! Label selectors as `k8s.io/apimachinery/pkg/labels.Parse` reads them:
//! `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`, `k>1`,
//! `k<1`, comma-separated and ANDed. `!=` and `notin` also match objects
//! without the key, as on a real server.

use std::collections::BTreeMap;

use super::names;

/// A parsed selector; the empty selector matches everything.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Selector(Vec<Requirement>);

#[derive(Debug, Clone, PartialEq)]
struct Requirement {
    key: String,
    op: Op,
    values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Equals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Bang,
    Eq,
    DoubleEq,
    NotEq,
    Open,
    Close,
    Comma,
    Gt,
    Lt,
    End,
}

impl Token {
    fn text(&self) -> String {
        match self {
            Token::Ident(s) => s.clone(),
            Token::Bang => "!".into(),
            Token::Eq => "=".into(),
            Token::DoubleEq => "==".into(),
            Token::NotEq => "!=".into(),
            Token::Open => "(".into(),
            Token::Close => ")".into(),
            Token::Comma => ",".into(),
            Token::Gt => ">".into(),
            Token::Lt => "<".into(),
            Token::End => String::new(),
        }
    }
}

fn lex(input: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut chars = input.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '!' | '=' => {
                chars.next();
                let double = chars.peek() == Some(&'=');
                if double {
                    chars.next();
                }
                tokens.push(match (c, double) {
                    ('!', true) => Token::NotEq,
                    ('!', false) => Token::Bang,
                    (_, true) => Token::DoubleEq,
                    (_, false) => Token::Eq,
                });
            }
            '(' | ')' | ',' | '>' | '<' => {
                chars.next();
                tokens.push(match c {
                    '(' => Token::Open,
                    ')' => Token::Close,
                    ',' => Token::Comma,
                    '>' => Token::Gt,
                    _ => Token::Lt,
                });
            }
            _ => {
                let mut ident = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || "!=(),<>".contains(c) {
                        break;
                    }
                    ident.push(c);
                    chars.next();
                }
                tokens.push(Token::Ident(ident));
            }
        }
    }
    tokens.push(Token::End);
    tokens
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        self.pos += 1;
        t
    }

    fn ident(&mut self) -> Result<String, SelectorError> {
        match self.next() {
            Token::Ident(s) if s != "in" && s != "notin" => Ok(s),
            t => Err(format!("found '{}', expected: identifier", t.text()).into()),
        }
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        let negated = self.peek() == &Token::Bang;
        if negated {
            self.next();
        }
        let key = self.ident()?;
        let key_errs = names::qualified_name(&key);
        if !key_errs.is_empty() {
            return Err(format!("key: Invalid value: \"{key}\": {}", key_errs.join("; ")).into());
        }
        if negated {
            return Ok(Requirement {
                key,
                op: Op::DoesNotExist,
                values: vec![],
            });
        }
        if matches!(self.peek(), Token::End | Token::Comma) {
            return Ok(Requirement {
                key,
                op: Op::Exists,
                values: vec![],
            });
        }
        let op = match self.next() {
            Token::Eq | Token::DoubleEq => Op::Equals,
            Token::NotEq => Op::NotEquals,
            Token::Gt => Op::GreaterThan,
            Token::Lt => Op::LessThan,
            Token::Ident(s) if s == "in" => Op::In,
            Token::Ident(s) if s == "notin" => Op::NotIn,
            t => {
                return Err(format!(
                    "found '{}', expected: in, notin, =, ==, !=, gt, lt",
                    t.text()
                )
                .into())
            }
        };
        let values = match op {
            Op::In | Op::NotIn => self.value_set()?,
            _ => match self.peek() {
                // `k=` selects the empty value.
                Token::End | Token::Comma => vec![String::new()],
                _ => vec![self.ident()?],
            },
        };
        if matches!(op, Op::In | Op::NotIn) && values.is_empty() {
            return Err("for 'in', 'notin' operators, values set can't be empty".into());
        }
        for v in &values {
            if matches!(op, Op::GreaterThan | Op::LessThan) {
                if v.parse::<i64>().is_err() {
                    return Err(format!(
                        "for 'Gt', 'Lt' operators, the value must be an integer: \"{v}\""
                    )
                    .into());
                }
                continue;
            }
            let errs = names::label_value(v);
            if !errs.is_empty() {
                return Err(format!(
                    "values[0][{key}]: Invalid value: \"{v}\": {}",
                    errs.join("; ")
                )
                .into());
            }
        }
        Ok(Requirement { key, op, values })
    }

    fn value_set(&mut self) -> Result<Vec<String>, SelectorError> {
        match self.next() {
            Token::Open => {}
            t => return Err(format!("found '{}', expected: '('", t.text()).into()),
        }
        let mut values = Vec::new();
        if self.peek() == &Token::Close {
            self.next();
            return Ok(values);
        }
        loop {
            match self.peek().clone() {
                Token::Ident(s) => {
                    self.next();
                    values.push(s);
                }
                // `(a,)` and `(,a)` carry an empty value.
                Token::Comma | Token::Close => values.push(String::new()),
                t => {
                    return Err(
                        format!("found '{}', expected: ',', ')' or identifier", t.text()).into(),
                    )
                }
            }
            match self.next() {
                Token::Comma => continue,
                Token::Close => return Ok(values),
                t => return Err(format!("found '{}', expected: ',' or ')'", t.text()).into()),
            }
        }
    }
}

impl Selector {
    /// Parses the `labelSelector` query parameter; the error is the server's message.
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        let mut p = Parser {
            tokens: lex(text),
            pos: 0,
        };
        let mut reqs = Vec::new();
        loop {
            match p.peek() {
                Token::End => return Ok(Selector(reqs)),
                Token::Ident(_) | Token::Bang => {}
                t => {
                    return Err(format!(
                        "unable to parse requirement: found '{}', expected: !, identifier, or 'end of string'",
                        t.text()
                    ).into())
                }
            }
            reqs.push(
                p.requirement()
                    .map_err(|e| format!("unable to parse requirement: {e}"))?,
            );
            match p.next() {
                Token::End => return Ok(Selector(reqs)),
                Token::Comma => {
                    if p.peek() == &Token::End {
                        return Err("found '', expected: identifier after ','".into());
                    }
                }
                t => {
                    return Err(
                        format!("found '{}', expected: ',' or 'end of string'", t.text()).into(),
                    )
                }
            }
        }
    }

    /// Whether an object with these labels is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| {
            let value = labels.get(&r.key);
            match r.op {
                Op::Equals | Op::In => value.is_some_and(|v| r.values.contains(v)),
                Op::NotEquals | Op::NotIn => !value.is_some_and(|v| r.values.contains(v)),
                Op::Exists => value.is_some(),
                Op::DoesNotExist => value.is_none(),
                Op::GreaterThan | Op::LessThan => {
                    let (Some(have), Some(want)) = (
                        value.and_then(|v| v.parse::<i64>().ok()),
                        r.values.first().and_then(|v| v.parse::<i64>().ok()),
                    ) else {
                        return false;
                    };
                    if r.op == Op::GreaterThan {
                        have > want
                    } else {
                        have < want
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sel(s: &str) -> Selector {
        Selector::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn equality_forms_and_conjunction() {
        let l = labels(&[("app.kubernetes.io/managed-by", "airlock"), ("tier", "x")]);
        assert!(sel("app.kubernetes.io/managed-by=airlock").matches(&l));
        assert!(sel("app.kubernetes.io/managed-by==airlock").matches(&l));
        assert!(sel(" app.kubernetes.io/managed-by = airlock , tier=x ").matches(&l));
        assert!(!sel("app.kubernetes.io/managed-by=airlock,tier=y").matches(&l));
        assert!(!sel("app.kubernetes.io/managed-by!=airlock").matches(&l));
    }

    #[test]
    fn negative_forms_match_missing_keys() {
        let l = labels(&[("a", "1")]);
        assert!(sel("b!=1").matches(&l));
        assert!(sel("b notin (1,2)").matches(&l));
        assert!(sel("!b").matches(&l));
        assert!(!sel("!a").matches(&l));
        assert!(sel("a").matches(&l));
        assert!(!sel("b").matches(&l));
    }

    #[test]
    fn set_and_numeric_forms() {
        let l = labels(&[("a", "5"), ("e", "")]);
        assert!(sel("a in (4,5)").matches(&l));
        assert!(!sel("a notin (4,5)").matches(&l));
        assert!(sel("a>4,a<6").matches(&l));
        assert!(sel("e=").matches(&l));
        assert!(sel("e in (x,)").matches(&l));
        assert!(sel("").matches(&l));
    }

    #[test]
    fn malformed_selectors_are_errors() {
        for bad in [
            "a=b=c",
            "a in 1",
            "a in ()",
            ",a",
            "a,",
            "a>b",
            "bad key!=1",
            "a=bad value!",
        ] {
            assert!(Selector::parse(bad).is_err(), "{bad} should not parse");
        }
    }
}

/// Why a label selector does not parse: the text the API server would answer with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(pub String);

impl From<String> for SelectorError {
    fn from(s: String) -> Self {
        SelectorError(s)
    }
}

impl From<&str> for SelectorError {
    fn from(s: &str) -> Self {
        SelectorError(s.to_string())
    }
}

impl From<SelectorError> for String {
    fn from(e: SelectorError) -> String {
        e.0
    }
}
