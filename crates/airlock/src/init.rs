//! `airlock init [DIR]`: a commented starter catalog that `airlock serve`
//! starts from without edits, a Cedar policy with one rule, and policy test
//! cases that pass against both.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Provider kinds `init` writes a section for.
pub const KINDS: [&str; 2] = ["postgres", "ssh"];

const HEADER: &str = r#"# airlock catalog written by `airlock init`. Start it with
#   airlock serve --config airlock.toml
# then `airlock token create --user alice` with AIRLOCK_TOKEN set to the
# admin token (AIRLOCK_BOOTSTRAP_TOKEN=... when starting the server).
# Every key is in README.md, "Configuration reference".

[server]
listen = "127.0.0.1:8080"
database = "sqlite://airlock.db"        # relative to this file; postgres://… for several replicas
policy = "policy.cedar"                 # operator rules on top of the catalog (Cedar)
# public_url = "https://airlock.example.com"
# auditors = ["group:security"]         # may read the whole audit log

# Static users and groups. With SSO ([auth.oidc]) people and groups come from
# the identity provider instead.
[[user]]
name = "alice"
email = "alice@example.com"

[[user]]
name = "bob"
email = "bob@example.com"

[[group]]
name = "payments-eng"
members = ["alice", "bob"]
"#;

const POSTGRES: &str = r#"
# --- PostgreSQL: a login role per grant, ended by VALID UNTIL even when
# airlock is down. airlock's user needs CREATEROLE and ADMIN on `role`.
# If this server cannot be reached, `serve` still starts and says so.
[providers.pg-main]
kind = "postgres"
url = "postgres://postgres@127.0.0.1:5432/postgres"

[[entitlement]]
name = "payments-db-write"
description = "Write access to the payments tables"
provider = "pg-main"
role = "payments_writer"                # an existing role the grant is made a member of
max_duration = "1h"
approvals = { count = 1, reviewers = ["payments-eng"] }   # never the requester
reason = { required = true, pattern = "^(INC|CHG)-[0-9]+" }
"#;

const SSH: &str = r#"
# --- SSH: short-lived certificates; the CA key is created on first start.
# Hosts trust it with TrustedUserCAKeys (`airlock ssh ca-key ssh-main`).
[providers.ssh-main]
kind = "ssh"
ca_key = "ssh_ca"                       # relative to this file

[[entitlement]]
name = "web-deploy"
description = "Log in to the web servers as deploy"
provider = "ssh-main"
principals = ["deploy"]
max_duration = "1h"
approvals = { count = 1, reviewers = ["payments-eng"] }
"#;

const BREAKGLASS: &str = r#"
# --- Break-glass: self-service in an emergency, loud, reviewed afterwards.
[[entitlement]]
name = "{NAME}-breakglass"
description = "Emergency access; someone else reviews it afterwards"
{TARGET}
max_duration = "30m"
breakglass = true
requesters = ["payments-eng"]                             # who may self-activate it
approvals = { count = 1, reviewers = ["payments-eng"] }   # who closes the post-incident review
"#;

const TOOLS: &str = r#"
# --- Tool proxy: commands run on the server through rules, never a shell.
# The sample runs /bin/echo so it works anywhere. For a real tool, set
# run_as to a dedicated OS user (airlock then needs CAP_SETUID/CAP_SETGID)
# so a shell escape in it cannot read airlock's keys.
[[tool]]
name = "echo"
path = "/bin/echo"
run_as = "server"
timeout = "10s"
[[tool.rule]]
args = ["hello", "**"]
action = "allow"
[[tool.rule]]
args = ["deploy", "*"]
action = "approve"
approvals = { count = 1, reviewers = ["payments-eng"] }
[[tool.rule]]
args = ["delete", "**"]
action = "deny"
reason = "deleting goes through a pull request"

# --- An operation: a named, typed, reviewed command with a dry run.
[[operation]]
name = "restart-deployment"
description = "Rolling restart of one deployment (sample: echoes the kubectl command)"
tool = "echo"
run_as = "server"
args = ["kubectl", "rollout", "restart", "deployment/{deployment}", "-n", "{namespace}"]
dry_run_args = ["kubectl", "rollout", "restart", "deployment/{deployment}", "-n", "{namespace}", "--dry-run=server"]
approvals = { count = 1, reviewers = ["payments-eng"] }
rate = "3/1h"
[operation.params.namespace]
enum = ["payments", "ledger"]
[operation.params.deployment]
pattern = "^[a-z0-9-]{1,63}$"
"#;

const POLICY: &str = r#"// Operator rules, evaluated after the catalog (Cedar). A forbid always wins.
// Test them with: airlock policy test policy-tests.toml --config airlock.toml

@id("long-grants-need-mfa")
forbid(principal, action == Action::"request", resource)
when { context.duration > 1800 && !context.mfa };
"#;

const POLICY_TESTS_HEADER: &str =
    "# Policy test cases: airlock policy test policy-tests.toml --config airlock.toml\n";

/// (name, principal, action, context, expected decision) of the starter cases.
const CASES: [(&str, &str, &str, &str, &str); 3] = [
    (
        "alice may ask for 20 minutes",
        "alice",
        "request",
        r#"{ duration = "20m" }"#,
        "allow",
    ),
    (
        "45 minutes need MFA",
        "alice",
        "request",
        r#"{ duration = "45m" }"#,
        "deny",
    ),
    (
        "bob reviews alice",
        "bob",
        "review",
        r#"{ requester = "alice" }"#,
        "allow",
    ),
];

fn policy_tests(entitlement: &str) -> String {
    let mut out = POLICY_TESTS_HEADER.to_string();
    for (name, principal, action, context, expect) in CASES {
        out.push_str(&format!(
            "\n[[case]]\nname = \"{name}\"\nprincipal = \"{principal}\"\naction = \"{action}\"\n\
             entitlement = \"{entitlement}\"\ncontext = {context}\nexpect = \"{expect}\"\n"
        ));
    }
    out
}

/// The three files for `kinds` (a subset of [`KINDS`], in any order).
pub fn files(kinds: &[String]) -> Result<Vec<(&'static str, String)>> {
    let mut chosen = Vec::new();
    for k in kinds {
        if !KINDS.contains(&k.as_str()) {
            bail!(
                "init writes sections for {}, not `{k}`; add other providers by hand (README, \"Providers\")",
                KINDS.join(", ")
            );
        }
        if !chosen.contains(&k.as_str()) {
            chosen.push(k.as_str());
        }
    }
    if chosen.is_empty() {
        bail!("--provider needs at least one of {}", KINDS.join(", "));
    }
    let mut toml = HEADER.to_string();
    for k in KINDS.iter().filter(|k| chosen.contains(k)) {
        toml.push_str(if *k == "postgres" { POSTGRES } else { SSH });
    }
    let (name, target, ent) = if chosen.contains(&"postgres") {
        (
            "payments-db",
            "provider = \"pg-main\"\nrole = \"payments_writer\"",
            "payments-db-write",
        )
    } else {
        (
            "web",
            "provider = \"ssh-main\"\nprincipals = [\"deploy\"]",
            "web-deploy",
        )
    };
    toml.push_str(
        &BREAKGLASS
            .replace("{NAME}", name)
            .replace("{TARGET}", target),
    );
    toml.push_str(TOOLS);
    Ok(vec![
        ("airlock.toml", toml),
        ("policy.cedar", POLICY.to_string()),
        ("policy-tests.toml", policy_tests(ent)),
    ])
}

/// Writes the files into `dir` (created if missing); never overwrites.
pub fn write(dir: &Path, kinds: &[String]) -> Result<Vec<PathBuf>> {
    let files = files(kinds)?;
    for (name, _) in &files {
        let p = dir.join(name);
        if p.exists() {
            bail!(
                "{} exists already; init never overwrites (pick another DIR or move it away)",
                p.display()
            );
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written = Vec::new();
    for (name, text) in files {
        let p = dir.join(name);
        std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))?;
        written.push(p);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_providers::ValidatedConfig;

    fn kinds(k: &[&str]) -> Vec<String> {
        k.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_choice_of_providers_validates() {
        for k in [
            &["postgres", "ssh"][..],
            &["postgres"],
            &["ssh"],
            &["ssh", "postgres", "ssh"],
        ] {
            let f = files(&kinds(k)).unwrap();
            let c = ValidatedConfig::parse(&f[0].1).unwrap_or_else(|e| panic!("{k:?}: {e}"));
            assert_eq!(
                c.providers.len(),
                k.iter().collect::<std::collections::BTreeSet<_>>().len()
            );
            assert!(c.entitlements.values().any(|e| e.breakglass), "{k:?}");
            assert!(!c.tools.is_empty() && !c.operations.is_empty());
        }
    }

    #[test]
    fn unknown_kinds_and_an_empty_choice_are_refused_with_the_known_ones() {
        let e = files(&kinds(&["postgres", "mysqll"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`mysqll`") && e.contains("postgres, ssh"), "{e}");
        assert!(files(&[]).is_err());
    }
}
