//! `airlock doctor` for MariaDB: every privilege of "Privileges airlock's
//! MariaDB account needs" (docs/providers/mysql.md), read from
//! `information_schema` (read-only), each missing one with the statement
//! that grants it.

use std::collections::BTreeMap;

use mysql_async::prelude::Queryable;

use super::errors::Failure;
use super::session::Session;
use super::MysqlProvider;
use crate::Finding;

/// `'text'` with quotes doubled, as MariaDB reads a string.
fn string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `` `name` `` with backticks doubled, as MariaDB reads an identifier.
fn ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

fn finding(check: &str, ok: bool, detail: String, fix: String) -> Finding {
    Finding {
        check: check.into(),
        ok,
        detail,
        fix: (!ok).then_some(fix),
    }
}

impl MysqlProvider {
    /// The checks, on the cached session. `roles` maps each entitlement role
    /// to the entitlements that grant it.
    pub(super) async fn doctor_on(
        &self,
        s: &mut Session,
        roles: &BTreeMap<String, Vec<String>>,
    ) -> Result<Vec<Finding>, Failure> {
        let grantee = format!("'{}'@'{}'", s.me_user, s.me_host);
        let who = format!("{}@{}", string(&s.me_user), string(&s.me_host));
        let global: Vec<String> = s
            .conn
            .exec(
                "SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES WHERE GRANTEE = ?",
                (&grantee,),
            )
            .await?;
        let schema: Vec<(String, String)> = s
            .conn
            .exec(
                "SELECT TABLE_SCHEMA, PRIVILEGE_TYPE FROM information_schema.SCHEMA_PRIVILEGES \
                 WHERE GRANTEE = ?",
                (&grantee,),
            )
            .await?;
        let table: Vec<(String, String, String)> = s
            .conn
            .exec(
                "SELECT TABLE_SCHEMA, TABLE_NAME, PRIVILEGE_TYPE FROM information_schema.TABLE_PRIVILEGES \
                 WHERE GRANTEE = ?",
                (&grantee,),
            )
            .await?;
        let has_global = |p: &str| global.iter().any(|g| g == p);
        let has_schema =
            |db: &str, p: &str| has_global(p) || schema.iter().any(|(d, q)| d == db && q == p);
        let has_table = |db: &str, t: &str, p: &str| {
            has_schema(db, p) || table.iter().any(|(d, n, q)| d == db && n == t && q == p)
        };
        let mut out = Vec::new();
        let yes_no = |ok: bool, what: &str| {
            if ok {
                format!("{grantee} holds {what}")
            } else {
                format!("{grantee} lacks {what}")
            }
        };
        let ok = has_global("CREATE USER");
        out.push(finding(
            "CREATE USER",
            ok,
            yes_no(ok, "CREATE USER (to create and drop the grant users)"),
            format!("GRANT CREATE USER ON *.* TO {who};"),
        ));
        let ok = has_global("CONNECTION ADMIN") || has_global("SUPER");
        out.push(finding(
            "CONNECTION ADMIN",
            ok,
            yes_no(ok, "CONNECTION ADMIN (to end a grant user's open sessions)"),
            format!("GRANT CONNECTION ADMIN ON *.* TO {who};"),
        ));
        let events = &self.event_schema;
        let ok = has_schema(events, "EVENT");
        out.push(finding(
            "EVENT",
            ok,
            yes_no(ok, &format!("EVENT on {events} (the native expiry events)")),
            format!("GRANT EVENT ON {}.* TO {who};", ident(events)),
        ));
        for t in ["user", "roles_mapping"] {
            let ok = has_table("mysql", t, "SELECT");
            out.push(finding(
                &format!("SELECT ON mysql.{t}"),
                ok,
                yes_no(
                    ok,
                    &format!("SELECT on mysql.{t} (drift and standing access)"),
                ),
                format!("GRANT SELECT ON mysql.{t} TO {who};"),
            ));
        }
        let ok = has_schema("mysql", "UPDATE");
        out.push(finding(
            "UPDATE ON mysql.*",
            ok,
            yes_no(
                ok,
                "UPDATE on mysql.* (SET DEFAULT ROLE for the grant users)",
            ),
            format!("GRANT UPDATE ON mysql.* TO {who};"),
        ));
        let scheduler: Option<String> = s
            .conn
            .query_first("SELECT @@global.event_scheduler")
            .await?;
        let scheduler = scheduler.unwrap_or_default();
        let ok = scheduler.eq_ignore_ascii_case("ON");
        out.push(finding(
            "event_scheduler",
            ok,
            format!("event_scheduler is {scheduler}: grants end inside the server at not_after only when it is ON"),
            "SET GLOBAL event_scheduler = ON;  -- and `event_scheduler = ON` under [mysqld] in the server's configuration".into(),
        ));
        let can_read_roles = has_table("mysql", "user", "SELECT");
        for (role, entitlements) in roles {
            let named = entitlements.join(", ");
            if !can_read_roles {
                out.push(finding(
                    &format!("role {role}"),
                    false,
                    format!("cannot tell whether role {role} ({named}) exists without SELECT on mysql.user"),
                    format!("GRANT SELECT ON mysql.user TO {who};"),
                ));
                continue;
            }
            let exists: Option<i64> = s
                .conn
                .exec_first(
                    "SELECT COUNT(*) FROM mysql.user WHERE User = ? AND is_role = 'Y'",
                    (role,),
                )
                .await?;
            if exists.unwrap_or(0) == 0 {
                out.push(finding(
                    &format!("role {role}"),
                    false,
                    format!("role {role} ({named}) does not exist"),
                    format!("CREATE ROLE {} WITH ADMIN {who};", ident(role)),
                ));
                continue;
            }
            let admin: Option<String> = s
                .conn
                .exec_first(
                    "SELECT Admin_option FROM mysql.roles_mapping WHERE User = ? AND Host = ? AND Role = ?",
                    (&s.me_user, &s.me_host, role),
                )
                .await?;
            let ok = admin.as_deref() == Some("Y");
            out.push(finding(
                &format!("ADMIN OPTION on {role}"),
                ok,
                if ok {
                    format!("{grantee} may grant role {role} ({named})")
                } else {
                    format!("{grantee} may not grant role {role} ({named}): it needs the role WITH ADMIN OPTION")
                },
                format!("GRANT {} TO {who} WITH ADMIN OPTION;", ident(role)),
            ));
        }
        Ok(out)
    }
}
