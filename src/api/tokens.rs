//! API tokens: what a program shows to use `/api/v1`, and the store that
//! owns the `api_tokens` table.
//!
//! A token is `nl_` and 32 random bytes in base64url (no padding). Only the
//! SHA-256 of those bytes is stored: the token is shown once, when it is
//! made, and a request's token is found by the hash of what it presents.
//! Looking the hash up by equality leaks nothing useful through timing: an
//! attacker would need a preimage of the hash to aim at a stored one.
//!
//! Each token has scopes (`read`, `write`, `publish`; the last two imply
//! `read`), may expire, and may be revoked; a revoked token is kept, so that
//! the list and the audit log still name it. When it was last used is
//! written at most once a minute per token ([`LAST_USED_RESOLUTION`]): a busy
//! client must not turn every read into a write.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use uuid::Uuid;

/// How a token begins: it tells a leaked secret's finder (and secret
/// scanners) whose it is.
pub const TOKEN_PREFIX: &str = "nl_";

/// How stale `last_used_at` may get before a use writes it again.
pub const LAST_USED_RESOLUTION: chrono::TimeDelta = chrono::TimeDelta::minutes(1);

/// The longest lifetime a token can be given at creation, in days.
pub const MAX_EXPIRES_IN_DAYS: u32 = 3650;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Read lists and subscribers.
    Read,
    /// Create and change lists and subscribers.
    Write,
    /// Publish issues.
    Publish,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Write, Scope::Publish];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Publish => "publish",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Scope::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

/// A token's scopes: never empty, `read` always in it (write and publish
/// imply it), in the order of [`Scope::ALL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scopes(Vec<Scope>);

impl Scopes {
    /// Scopes named by a comma-separated list (`read,write`), as the
    /// command line takes them.
    pub fn parse_list(raw: &str) -> Result<Self, String> {
        Self::from_names(raw.split(',').map(str::trim).filter(|s| !s.is_empty()))
    }

    /// Scopes from their names, each of which must be known; at least one.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut scopes = vec![Scope::Read];
        let mut named = false;
        for name in names {
            let scope = Scope::parse(name)
                .ok_or_else(|| format!("`{name}` is not a scope: use read, write or publish."))?;
            named = true;
            scopes.push(scope);
        }
        if !named {
            return Err("Choose at least one scope: read, write or publish.".into());
        }
        scopes.sort();
        scopes.dedup();
        Ok(Self(scopes))
    }

    pub fn allows(&self, scope: Scope) -> bool {
        self.0.contains(&scope)
    }

    pub fn iter(&self) -> impl Iterator<Item = Scope> + '_ {
        self.0.iter().copied()
    }

    fn names(&self) -> Vec<&'static str> {
        self.0.iter().map(|s| s.as_str()).collect()
    }

    /// As stored; names the database's check already refused are dropped,
    /// and `read` is always kept.
    fn from_stored(names: &[String]) -> Self {
        let mut scopes: Vec<Scope> = names.iter().filter_map(|n| Scope::parse(n)).collect();
        scopes.push(Scope::Read);
        scopes.sort();
        scopes.dedup();
        Self(scopes)
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(","))
    }
}

/// A token's name, which the admin chooses and the command line revokes
/// by: 1 to 64 letters, digits, spaces, `-`, `_` or `.`, trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenName(String);

impl TokenName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let name = raw.trim();
        if name.is_empty() {
            return Err("Give the token a name, such as the program that will use it.".into());
        }
        if name.chars().count() > 64 {
            return Err("A token's name is at most 64 characters.".into());
        }
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.')))
        {
            return Err(format!(
                "A token's name takes letters, digits, spaces, `-`, `_` and `.`, not U+{:04X}.",
                u32::from(c)
            ));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TokenName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The token as shown once to whoever made it. Not `Debug` nor `Display`:
/// it must not reach a log by accident.
pub struct TokenSecret(String);

impl TokenSecret {
    fn generate() -> (Self, [u8; 32]) {
        let mut bytes = [0u8; 32];
        rand::fill(&mut bytes);
        let text = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
        (Self(text), sha256(&bytes))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// The hash a presented token is looked up by, or `None` for text that
/// cannot be a token at all (and so names none).
pub fn presented_hash(presented: &str) -> Option<[u8; 32]> {
    let encoded = presented.strip_prefix(TOKEN_PREFIX)?;
    let bytes = URL_SAFE_NO_PAD.decode(encoded).ok()?;
    (bytes.len() == 32).then(|| sha256(&bytes))
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// A token as stored: never its secret.
#[derive(Debug, Clone)]
pub struct Token {
    pub id: Uuid,
    pub name: String,
    pub scopes: Scopes,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

impl Token {
    /// Whether the token opens the API at `now`.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| at > now)
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    name: String,
    scopes: Vec<String>,
    created_by: String,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    last_used_at: Option<DateTime<Utc>>,
}

impl From<Row> for Token {
    fn from(row: Row) -> Self {
        Token {
            id: row.id,
            name: row.name,
            scopes: Scopes::from_stored(&row.scopes),
            created_by: row.created_by,
            created_at: row.created_at,
            expires_at: row.expires_at,
            revoked_at: row.revoked_at,
            last_used_at: row.last_used_at,
        }
    }
}

const COLUMNS: &str =
    "id, name, scopes, created_by, created_at, expires_at, revoked_at, last_used_at";

/// What a new token is made of.
pub struct NewToken<'a> {
    pub name: &'a TokenName,
    pub scopes: &'a Scopes,
    /// Who made it: an admin's username, as the audit log names them.
    pub created_by: &'a str,
    pub expires_in_days: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error(
        "A token named {0} exists already (revoked tokens keep their names): choose another name."
    )]
    NameTaken(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Stores a new token and returns it with its secret, which exists nowhere
/// else from now on.
pub async fn create(
    conn: &mut PgConnection,
    new: &NewToken<'_>,
) -> Result<(Token, TokenSecret), CreateError> {
    let (secret, hash) = TokenSecret::generate();
    // The unique constraint decides a race between two creations.
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO api_tokens (id, name, token_sha256, scopes, created_by, expires_at) \
         VALUES ($1, $2, $3, $4, $5, now() + make_interval(days => $6)) \
         ON CONFLICT (name) DO NOTHING RETURNING {COLUMNS}"
    )))
    .bind(Uuid::new_v4())
    .bind(new.name.as_str())
    .bind(&hash[..])
    .bind(new.scopes.names())
    .bind(new.created_by)
    .bind(new.expires_in_days.map(|d| d as i32))
    .fetch_optional(conn)
    .await?;
    match row {
        Some(row) => Ok((row.into(), secret)),
        None => Err(CreateError::NameTaken(new.name.to_string())),
    }
}

/// The token whose secret hashes to `hash`, live or not.
pub async fn find_by_hash(
    conn: &mut PgConnection,
    hash: &[u8; 32],
) -> Result<Option<Token>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM api_tokens WHERE token_sha256 = $1"
    )))
    .bind(&hash[..])
    .fetch_optional(conn)
    .await?;
    Ok(row.map(Token::from))
}

/// Every token, newest first.
pub async fn all(conn: &mut PgConnection) -> Result<Vec<Token>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM api_tokens ORDER BY created_at DESC, id"
    )))
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(Token::from).collect())
}

/// Revokes the token with this id; `None` if there is none, or it was
/// revoked already (the first revocation's time stays).
pub async fn revoke(conn: &mut PgConnection, id: Uuid) -> Result<Option<Token>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE api_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL \
         RETURNING {COLUMNS}"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(Token::from))
}

/// Revokes the token with this name, as [`revoke`] does.
pub async fn revoke_by_name(
    conn: &mut PgConnection,
    name: &TokenName,
) -> Result<Option<Token>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE api_tokens SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL \
         RETURNING {COLUMNS}"
    )))
    .bind(name.as_str())
    .fetch_optional(conn)
    .await?;
    Ok(row.map(Token::from))
}

/// Whether a use of `token` at `now` should be written down: only when what
/// is stored is older than [`LAST_USED_RESOLUTION`].
pub fn needs_touch(token: &Token, now: DateTime<Utc>) -> bool {
    token
        .last_used_at
        .is_none_or(|at| now - at >= LAST_USED_RESOLUTION)
}

/// Records a use of the token. The condition is checked again in the
/// statement: replicas that saw the same stale time race, and only the
/// first of them writes.
pub async fn touch(conn: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE api_tokens SET last_used_at = now() WHERE id = $1 \
         AND (last_used_at IS NULL OR last_used_at <= now() - interval '1 minute')",
    )
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_and_publish_imply_read() {
        assert_eq!(
            Scopes::parse_list("write").unwrap().to_string(),
            "read,write"
        );
        assert_eq!(
            Scopes::parse_list("publish, read,publish")
                .unwrap()
                .to_string(),
            "read,publish"
        );
        assert_eq!(Scopes::parse_list("read").unwrap().to_string(), "read");
    }

    #[test]
    fn unknown_or_missing_scopes_are_refused_with_the_reason() {
        for (raw, reason) in [
            ("", "at least one"),
            (",", "at least one"),
            ("admin", "`admin` is not a scope"),
            ("read,Write", "`Write` is not a scope"),
        ] {
            let error = Scopes::parse_list(raw).unwrap_err();
            assert!(error.contains(reason), "{raw:?}: {error}");
        }
    }

    #[test]
    fn a_generated_token_is_found_by_the_hash_of_what_is_presented() {
        let (secret, hash) = TokenSecret::generate();
        assert!(secret.expose().starts_with(TOKEN_PREFIX));
        assert_eq!(presented_hash(secret.expose()), Some(hash));
        let (other, _) = TokenSecret::generate();
        assert_ne!(presented_hash(other.expose()), Some(hash));
    }

    #[test]
    fn text_that_cannot_be_a_token_names_none() {
        for presented in [
            "",
            "nl_",
            "nl_!!!!",
            "abc",
            "nl_AAAA",
            "xx_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert_eq!(presented_hash(presented), None, "{presented:?}");
        }
    }

    #[test]
    fn names_are_trimmed_and_refuse_control_characters() {
        assert_eq!(
            TokenName::parse("  site build ").unwrap().as_str(),
            "site build"
        );
        assert!(TokenName::parse("   ").is_err());
        assert!(TokenName::parse("a\u{202e}b").is_err());
        assert!(TokenName::parse("a\nb").is_err());
        assert!(TokenName::parse(&"x".repeat(65)).is_err());
    }

    #[test]
    fn a_use_is_written_at_most_once_a_minute() {
        let now = Utc::now();
        let mut token = Token {
            id: Uuid::nil(),
            name: "t".into(),
            scopes: Scopes::parse_list("read").unwrap(),
            created_by: "ada".into(),
            created_at: now,
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
        };
        assert!(needs_touch(&token, now));
        token.last_used_at = Some(now - chrono::TimeDelta::seconds(30));
        assert!(!needs_touch(&token, now));
        token.last_used_at = Some(now - chrono::TimeDelta::seconds(61));
        assert!(needs_touch(&token, now));
    }
}
