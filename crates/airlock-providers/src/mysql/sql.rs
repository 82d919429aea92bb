//! The statements the MariaDB provider sends, built in one place. Every name
//! reaches SQL as a backtick-quoted identifier (backticks doubled), which the
//! server reads the same under any `sql_mode`; the only string literals are
//! values airlock generates (a password hash, a timestamp, a request id) and
//! these are checked to need no escaping.

use time::macros::{datetime, format_description};
use time::{OffsetDateTime, UtcOffset};

/// A backtick-quoted identifier; safe for any text.
pub fn ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// The account `name`@`%` (every grant user may connect from anywhere;
/// the entitlement role decides what it can do).
pub fn account(name: &str) -> String {
    user_at(name, "%")
}

/// Any account, `user`@`host`.
pub fn user_at(user: &str, host: &str) -> String {
    format!("{}@{}", ident(user), ident(host))
}

/// A string literal for text airlock generated; `None` if it holds anything
/// that would need escaping (it never should).
pub fn generated_literal(s: &str) -> Option<String> {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b" *:-_.".contains(&b));
    plain.then(|| format!("'{s}'"))
}

/// The latest time MariaDB can schedule an event at (the end of its
/// TIMESTAMP range before 11.5).
pub const LAST_EVENT_TIME: OffsetDateTime = datetime!(2038-01-19 03:14:07 UTC);

/// `not_after` in UTC as MariaDB DATETIME text, floored to the second so the
/// event never fires later than `not_after`; `None` before 1970 or after
/// [`LAST_EVENT_TIME`].
pub fn utc_datetime(t: OffsetDateTime) -> Option<String> {
    let t = t.to_offset(UtcOffset::UTC);
    if t.year() < 1970 || t > LAST_EVENT_TIME {
        return None;
    }
    t.format(format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second]"
    ))
    .ok()
}

/// Everything one grant puts on the server.
pub struct Grant<'a> {
    /// The grant user's name.
    pub user: &'a str,
    /// The entitlement role.
    pub role: &'a str,
    /// `mysql_native_password` hash of the derived password.
    pub hash: &'a str,
    /// MAX_USER_CONNECTIONS.
    pub limit: u32,
    /// Schema that holds the expiry event.
    pub schema: &'a str,
    /// `not_after` from [`utc_datetime`].
    pub not_after: &'a str,
    /// Request id, for the event's comment.
    pub request_id: &'a str,
}

impl Grant<'_> {
    /// First attempt, one round trip: create the user and everything it needs.
    /// Fails at CREATE USER (ER_CANNOT_USER) when the user already exists.
    pub fn create(&self) -> Option<String> {
        Some(format!(
            "CREATE USER {} {}; {}",
            account(self.user),
            self.auth()?,
            self.rest()?
        ))
    }

    /// A retry after a crash, or a second apply: bring an existing user to
    /// the same state as [`Grant::create`] would.
    pub fn refresh(&self) -> Option<String> {
        Some(format!(
            "ALTER USER {} {}; {}",
            account(self.user),
            self.auth()?,
            self.rest()?
        ))
    }

    fn auth(&self) -> Option<String> {
        Some(format!(
            "IDENTIFIED BY PASSWORD {} WITH MAX_USER_CONNECTIONS {}",
            generated_literal(self.hash)?,
            self.limit
        ))
    }

    /// Role, default role and the expiry event. The event runs at not_after
    /// (or a second from now if the server's clock is already past it) and
    /// drops the user first, so a failing KILL cannot leave it able to log in.
    fn rest(&self) -> Option<String> {
        let user = account(self.user);
        let role = ident(self.role);
        Some(format!(
            "GRANT {role} TO {user}; SET DEFAULT ROLE {role} FOR {user}; \
             CREATE OR REPLACE EVENT {event} \
             ON SCHEDULE AT GREATEST(TIMESTAMP {at}, CURRENT_TIMESTAMP + INTERVAL 1 SECOND) \
             ON COMPLETION NOT PRESERVE COMMENT {comment} \
             DO BEGIN {end} END",
            event = event(self.schema, self.user),
            at = generated_literal(self.not_after)?,
            comment = generated_literal(&format!("airlock grant {} expiry", self.request_id))?,
            end = end_access(self.user),
        ))
    }
}

/// The expiry event of a grant user.
pub fn event(schema: &str, user: &str) -> String {
    format!("{}.{}", ident(schema), ident(user))
}

/// Drop the user, then end its sessions. After the DROP nobody can log in
/// as it, so no new session can slip in behind the KILL.
fn end_access(user: &str) -> String {
    let user = account(user);
    format!("DROP USER IF EXISTS {user}; KILL HARD USER {user};")
}

/// One round trip that ends a grant: user, expiry event, then sessions (so a
/// KILL refused for lack of privilege still leaves nothing to log in with).
/// Event names are at most 64 characters, so a longer user has no event.
pub fn remove(schema: &str, user: &str) -> String {
    let account = account(user);
    let drop_event = if user.chars().count() <= super::MAX_EVENT_NAME_LEN {
        format!("DROP EVENT IF EXISTS {}; ", event(schema, user))
    } else {
        String::new()
    };
    format!("DROP USER IF EXISTS {account}; {drop_event}KILL HARD USER {account}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_double_backticks_and_nothing_else() {
        assert_eq!(ident("plain"), "`plain`");
        assert_eq!(ident("a`b"), "`a``b`");
        assert_eq!(ident("x'; DROP USER root; --"), "`x'; DROP USER root; --`");
        assert_eq!(account("a`"), "`a```@`%`");
    }

    #[test]
    fn only_plain_generated_text_becomes_a_literal() {
        assert_eq!(
            generated_literal("2030-01-02 03:04:05").as_deref(),
            Some("'2030-01-02 03:04:05'")
        );
        assert!(generated_literal("it's").is_none());
        assert!(generated_literal("a\\b").is_none());
        assert!(generated_literal("").is_none());
    }

    #[test]
    fn not_after_is_utc_and_floored_to_the_second() {
        let t = datetime!(2030-01-02 03:04:05.999 +02:00);
        assert_eq!(utc_datetime(t).as_deref(), Some("2030-01-02 01:04:05"));
        assert!(utc_datetime(datetime!(1969-12-31 23:00 UTC)).is_none());
        assert!(utc_datetime(LAST_EVENT_TIME).is_some());
        assert!(utc_datetime(datetime!(2038-01-19 03:14:08 UTC)).is_none());
    }

    #[test]
    fn create_and_refresh_differ_only_in_the_first_statement() {
        let g = Grant {
            user: "airlock_abc",
            role: "payments_writer",
            hash: "*D821809F681A40A6E379B50D0463EFAE20BDD122",
            limit: 3,
            schema: "mysql",
            not_after: "2030-01-02 01:04:05",
            request_id: "abc",
        };
        let create = g.create().unwrap();
        assert!(create.starts_with(
            "CREATE USER `airlock_abc`@`%` IDENTIFIED BY PASSWORD '*D821809F681A40A6E379B50D0463EFAE20BDD122' \
             WITH MAX_USER_CONNECTIONS 3; GRANT `payments_writer` TO `airlock_abc`@`%`; \
             SET DEFAULT ROLE `payments_writer` FOR `airlock_abc`@`%`; CREATE OR REPLACE EVENT `mysql`.`airlock_abc` "
        ), "{create}");
        assert!(create.ends_with(
            "DO BEGIN DROP USER IF EXISTS `airlock_abc`@`%`; KILL HARD USER `airlock_abc`@`%`; END"
        ));
        let refresh = g.refresh().unwrap();
        assert_eq!(
            refresh.strip_prefix("ALTER USER"),
            create.strip_prefix("CREATE USER")
        );
    }

    #[test]
    fn remove_skips_the_event_of_names_too_long_to_have_one() {
        assert_eq!(
            remove("mysql", "airlock_abc"),
            "DROP USER IF EXISTS `airlock_abc`@`%`; DROP EVENT IF EXISTS `mysql`.`airlock_abc`; \
             KILL HARD USER `airlock_abc`@`%`"
        );
        let long = "x".repeat(65);
        assert!(!remove("mysql", &long).contains("DROP EVENT"));
    }
}
