//! Administrative PostgreSQL calls the benchmarks need around the code under
//! test: schemas, the entitlement role, and cleaning up roles by prefix.

use anyhow::{Context, Result};
use postgres::{Client, NoTls};

/// A blocking admin connection.
pub fn connect(url: &str) -> Result<Client> {
    Client::connect(url, NoTls).with_context(|| "connect to PostgreSQL (bench admin connection)")
}

/// Whether PostgreSQL answers at `url`.
pub fn ping(url: &str) -> bool {
    connect(url)
        .and_then(|mut c| Ok(c.simple_query("SELECT 1")?))
        .is_ok()
}

/// Creates a NOLOGIN role (the entitlement role grants join).
pub fn create_role(c: &mut Client, role: &str) -> Result<()> {
    c.batch_execute(&format!("CREATE ROLE {role} NOLOGIN"))?;
    Ok(())
}

/// Creates LOGIN roles in batches of 500 per transaction, members of `member_of`
/// (what the provider would have created for these grants).
pub fn create_login_roles(
    c: &mut Client,
    names: &[String],
    member_of: &str,
    until: &str,
) -> Result<()> {
    for chunk in names.chunks(500) {
        let mut sql = String::from("BEGIN;");
        for n in chunk {
            sql.push_str(&format!(
                "CREATE ROLE {n} LOGIN VALID UNTIL '{until}' CONNECTION LIMIT 10 IN ROLE {member_of};"
            ));
        }
        sql.push_str("COMMIT;");
        c.batch_execute(&sql)?;
    }
    Ok(())
}

/// Drops every role whose name starts with `prefix`, then the `extra` roles.
pub fn drop_roles(c: &mut Client, prefix: &str, extra: &[&str]) -> Result<usize> {
    let rows = c.query(
        "SELECT rolname::text FROM pg_catalog.pg_roles WHERE starts_with(rolname::text, $1::text)",
        &[&prefix],
    )?;
    let mut names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let n = names.len();
    names.extend(extra.iter().map(|s| s.to_string()));
    for chunk in names.chunks(500) {
        c.batch_execute(&format!("DROP ROLE IF EXISTS {}", chunk.join(", ")))?;
    }
    Ok(n)
}

/// A fresh schema; returns its name.
pub fn create_schema(c: &mut Client, name: &str) -> Result<()> {
    c.batch_execute(&format!("CREATE SCHEMA {name}"))?;
    Ok(())
}

/// Drops a schema and everything in it.
pub fn drop_schema(c: &mut Client, name: &str) -> Result<()> {
    c.batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))?;
    Ok(())
}
