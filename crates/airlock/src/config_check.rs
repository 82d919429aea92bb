//! `airlock config check FILE`: everything `serve` would refuse, all at once.
//!
//! The parser stops at the first problem, so a file with several is checked
//! piece by piece: each provider section alone, then the rest with the good
//! providers, then each `[[entitlement]]`, `[[tool]]` and `[[operation]]`
//! with that base. Pieces left out are turned into comments line by line, so
//! every message keeps the line numbers of the file as written.

use std::path::Path;

use airlock_core::config::Access;
use airlock_providers::ValidatedConfig;
use anyhow::{Context, Result};
use serde::Serialize;

use crate::Output;

/// What kind of table a block of the file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Provider,
    Entitlement,
    Tool,
    Operation,
    /// Anything else: `[server]`, users, groups, `[auth]`, `[notify]`, services.
    Base,
}

/// A table of the file: its kind and lines `[start, end)`.
#[derive(Debug)]
struct Block {
    kind: Kind,
    start: usize,
    end: usize,
}

/// Splits the file at table headers (a line starting with `[`).
fn blocks(text: &str) -> Vec<Block> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out: Vec<Block> = Vec::new();
    let mut current = Block {
        kind: Kind::Base,
        start: 0,
        end: 0,
    };
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        if !t.starts_with('[') {
            continue;
        }
        let kind = if t.starts_with("[[entitlement]]") {
            Kind::Entitlement
        } else if t.starts_with("[[tool]]") {
            Kind::Tool
        } else if t.starts_with("[[operation]]") {
            Kind::Operation
        } else if t.starts_with("[providers.") {
            Kind::Provider
        } else if t.starts_with("[[tool.")
            || t.starts_with("[[operation.")
            || t.starts_with("[tool.")
            || t.starts_with("[operation.")
        {
            // A sub-table belongs to the tool or operation above it.
            continue;
        } else {
            Kind::Base
        };
        current.end = i;
        out.push(std::mem::replace(
            &mut current,
            Block {
                kind,
                start: i,
                end: i,
            },
        ));
    }
    current.end = lines.len();
    out.push(current);
    out.retain(|b| b.end > b.start);
    out
}

/// The file with only the blocks `keep` says yes to (others commented out).
fn only(text: &str, blocks: &[Block], keep: impl Fn(usize, &Block) -> bool) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::with_capacity(text.len() + lines.len() * 2);
    for (i, b) in blocks.iter().enumerate() {
        let kept = keep(i, b);
        for line in &lines[b.start..b.end] {
            if !kept {
                out.push_str("# ");
            }
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// `NAME` of a `[providers.NAME]` header.
fn section_name(header: &str) -> Option<String> {
    let rest = header.trim().strip_prefix("[providers.")?;
    let name = rest.split(']').next()?.trim().trim_matches('"');
    Some(name.to_string())
}

/// The `provider = "NAME"` of an entitlement's lines.
fn provider_of(lines: &[&str]) -> Option<String> {
    lines.iter().find_map(|l| {
        let (key, value) = l.split_once('=')?;
        (key.trim() == "provider").then(|| {
            value
                .split('#')
                .next()
                .unwrap_or_default()
                .trim()
                .trim_matches('"')
                .to_string()
        })
    })
}

/// Every problem `serve` would refuse the file for, in file order.
pub fn problems(text: &str) -> Vec<String> {
    let first = match ValidatedConfig::parse(text) {
        Ok(_) => return Vec::new(),
        Err(e) => e.to_string(),
    };
    if toml::from_str::<toml::Table>(text).is_err() {
        // Not TOML at all: nothing can be checked piece by piece.
        return vec![first];
    }
    let bs = blocks(text);
    let mut found: Vec<String> = Vec::new();
    let mut note = |r: Result<ValidatedConfig, airlock_providers::ConfigError>| {
        if let Err(e) = r {
            let e = e.to_string();
            if !found.contains(&e) {
                found.push(e);
            }
            false
        } else {
            true
        }
    };
    let base_only = |b: &Block| b.kind == Kind::Base;
    let lines: Vec<&str> = text.lines().collect();
    // Each provider alone with the base.
    let mut good_providers = Vec::new();
    let mut bad_names = Vec::new();
    for (i, b) in bs.iter().enumerate() {
        if b.kind == Kind::Provider {
            let ok = note(ValidatedConfig::parse(&only(text, &bs, |j, c| {
                j == i || base_only(c)
            })));
            if ok {
                good_providers.push(i);
            } else if let Some(name) = section_name(lines[b.start]) {
                bad_names.push(name);
            }
        }
    }
    let base = |j: usize, c: &Block| base_only(c) || good_providers.contains(&j);
    note(ValidatedConfig::parse(&only(text, &bs, base)));
    let mut good_tools = Vec::new();
    for (i, b) in bs.iter().enumerate() {
        if !matches!(b.kind, Kind::Entitlement | Kind::Tool) {
            continue;
        }
        // An entitlement of a broken provider says only that again.
        let provider = provider_of(&lines[b.start..b.end]);
        if b.kind == Kind::Entitlement && provider.is_some_and(|p| bad_names.contains(&p)) {
            continue;
        }
        let ok = note(ValidatedConfig::parse(&only(text, &bs, |j, c| {
            j == i || base(j, c)
        })));
        if ok && b.kind == Kind::Tool {
            good_tools.push(i);
        }
    }
    for (i, b) in bs.iter().enumerate() {
        if b.kind == Kind::Operation {
            note(ValidatedConfig::parse(&only(text, &bs, |j, c| {
                j == i || base(j, c) || good_tools.contains(&j)
            })));
        }
    }
    if found.is_empty() {
        // Only the whole file shows it (a reference across pieces).
        found.push(first);
    }
    found
}

#[derive(Serialize)]
struct EntitlementSummary {
    name: String,
    provider: String,
    kind: String,
    access: Access,
    breakglass: bool,
    /// Who may ask (empty: anyone authenticated).
    requesters: Vec<String>,
    /// Distinct approvals needed.
    approvals: u32,
    reviewers: Vec<String>,
    max_duration: String,
}

#[derive(Serialize)]
struct ProviderSummary {
    name: String,
    kind: String,
}

#[derive(Serialize)]
struct Summary {
    ok: bool,
    file: String,
    problems: Vec<String>,
    providers: Vec<ProviderSummary>,
    entitlements: Vec<EntitlementSummary>,
    tools: usize,
    operations: usize,
}

/// Runs `airlock config check FILE`: exit 0 with a summary, or 1 with every problem.
pub fn check(out: Output, file: &Path) -> Result<i32> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read config {}", file.display()))?;
    let mut problems = problems(&text);
    let mut summary = Summary {
        ok: false,
        file: file.display().to_string(),
        problems: Vec::new(),
        providers: Vec::new(),
        entitlements: Vec::new(),
        tools: 0,
        operations: 0,
    };
    if problems.is_empty() {
        // What `serve` does next: the policy file and the provider objects.
        match crate::serve::resolve(file, None) {
            Ok(r) => {
                if let Err(e) =
                    airlock_core::policy::PolicyEngine::new(&r.config, r.policy_text.as_deref())
                {
                    problems.push(format!("policy: {e}"));
                }
                let ctx = airlock_providers::ProviderContext {
                    config_dir: r.config_dir.clone(),
                    data_dir: r.data_dir.clone(),
                };
                if let Err(e) = r.config.build_providers(&ctx) {
                    problems.push(e.to_string());
                }
                summary.providers = r
                    .config
                    .providers
                    .iter()
                    .map(|(n, p)| ProviderSummary {
                        name: n.to_string(),
                        kind: p.kind.clone(),
                    })
                    .collect();
                summary.entitlements = r
                    .config
                    .entitlements
                    .values()
                    .map(|e| EntitlementSummary {
                        name: e.name.to_string(),
                        provider: e.provider.to_string(),
                        kind: r
                            .config
                            .providers
                            .get(&e.provider)
                            .map(|p| p.kind.clone())
                            .unwrap_or_default(),
                        access: e.access,
                        breakglass: e.breakglass,
                        requesters: e.requesters.clone(),
                        approvals: e.approvals.count,
                        reviewers: e.approvals.reviewers.clone(),
                        max_duration: e.max_duration.to_string(),
                    })
                    .collect();
                summary.tools = r.config.tools.len();
                summary.operations = r.config.operations.len();
            }
            Err(e) => problems.push(format!("{e:#}")),
        }
    }
    summary.ok = problems.is_empty();
    summary.problems = problems;
    match out {
        Output::Json => say!(
            "{}",
            serde_json::to_string_pretty(&summary).unwrap_or_default()
        ),
        Output::Text => say!("{}", text_of(&summary)),
    }
    Ok(if summary.ok { 0 } else { 1 })
}

fn text_of(s: &Summary) -> String {
    if !s.ok {
        let mut lines = vec![format!("{}: {} problem(s)", s.file, s.problems.len())];
        lines.extend(s.problems.iter().map(|p| format!("  - {p}")));
        return lines.join("\n");
    }
    let mut lines = vec![format!(
        "{}: ok ({} providers, {} entitlements, {} tools, {} operations)",
        s.file,
        s.providers.len(),
        s.entitlements.len(),
        s.tools,
        s.operations
    )];
    for p in &s.providers {
        lines.push(format!("  provider {} ({})", p.name, p.kind));
    }
    for e in &s.entitlements {
        let who = if e.requesters.is_empty() {
            "anyone".to_string()
        } else {
            e.requesters.join(", ")
        };
        let review = if e.breakglass {
            format!(
                "break-glass, reviewed afterwards by {}",
                e.reviewers.join(", ")
            )
        } else if e.approvals == 0 {
            "approved automatically".to_string()
        } else {
            format!("{} of {}", e.approvals, e.reviewers.join(", "))
        };
        lines.push(format!(
            "  entitlement {} on {} ({}, access {}, up to {}): requested by {who}; {review}",
            e.name,
            e.provider,
            e.kind,
            e.access.as_str(),
            e.max_duration
        ));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[user]]
name = "alice"

[[group]]
name = "sre"
members = ["alice"]

[providers.pg]
kind = "postgres"
url = "postgres://airlock@127.0.0.1/postgres"

[[entitlement]]
name = "db"
provider = "pg"
role = "writer"
max_duration = "1h"
approvals = { count = 1, reviewers = ["sre"] }
"#;

    #[test]
    fn a_good_file_has_no_problem() {
        assert!(problems(GOOD).is_empty());
    }

    #[test]
    fn every_broken_piece_is_reported_with_its_own_line() {
        let text = format!(
            "{GOOD}
[providers.pg2]
kind = \"postgres\"
url = \"postgres://x@127.0.0.1/postgres\"
bogus_key = 1

[[entitlement]]
name = \"db2\"
provider = \"pg\"
role = \"writer\"
max_duration = \"1h\"
approvals = {{ count = 1, reviewers = [\"sre\"] }}
colour = \"blue\"

[[entitlement]]
name = \"db3\"
provider = \"nowhere\"
role = \"writer\"
max_duration = \"1h\"
approvals = {{ count = 1, reviewers = [\"sre\"] }}
"
        );
        let p = problems(&text);
        assert_eq!(p.len(), 3, "{p:#?}");
        assert!(
            p[0].contains("bogus_key") && p[0].contains("line 23"),
            "{}",
            p[0]
        );
        assert!(
            p[1].contains("colour") && p[1].contains("line 31"),
            "{}",
            p[1]
        );
        assert!(p[2].contains("nowhere"), "{}", p[2]);
    }

    #[test]
    fn a_syntax_error_is_the_one_problem() {
        let p = problems("[server\nlisten = 1");
        assert_eq!(p.len(), 1, "{p:?}");
    }
}
