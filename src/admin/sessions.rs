//! Admin sessions, kept in Redis so that every replica sees the same ones and
//! a password change can end them all at once.
//!
//! A browser holds only a random id (256 bits) in its cookie. Redis never
//! sees that id: a session is stored under the SHA-256 of it
//! (`{prefix}session:{hash}`), so someone who can read Redis — a replica, a
//! dump, `MONITOR` — learns which sessions exist but cannot present one. The
//! same goes for remembered browsers (`{prefix}device:{hash}`).
//!
//! A session ends after a while without requests (the idle timeout, slid
//! forward by every [`SessionStore::load`], never by [`SessionStore::peek`]) and at the latest a fixed time
//! after it was made (the lifetime), however busy it is. Both are enforced by
//! the key's TTL, which is always the smaller of the two, so an expired
//! session is gone from Redis rather than merely refused.
//!
//! Each admin has an index, `{prefix}admin_sessions:{admin_id}`, the set of
//! their session keys, so that [`SessionStore::destroy_all`] can end every
//! session of one admin. Entries of sessions that expired on their own stay
//! in the set until it expires; deleting a missing key is harmless.
//!
//! Redis being down is a state the pages must answer (503), not wait on:
//! every operation gives up with [`SessionError::Unavailable`] within about a
//! second.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, ExistenceCheck, SetExpiry, SetOptions};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::configuration::AdminSettings;
use crate::rate_limit::HeldCharges;

/// How long Redis gets to answer one command, and to accept a connection.
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

/// How long a whole operation (possibly two commands, or a reconnection and
/// a command) may take before the store reports itself unavailable. Without
/// this bound a reconnection attempt plus a retry could add up to several
/// seconds of a request hanging.
const OPERATION_DEADLINE: Duration = Duration::from_secs(1);

/// How long a browser is remembered after signing in.
const DEVICE_LIFETIME: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Random bytes in a session id, a CSRF token and a device token.
const TOKEN_BYTES: usize = 32;

/// The cookie's value: 32 random bytes (256 bits) from the thread-local
/// CSPRNG (ChaCha12 seeded from the OS), spelt as lowercase hex.
#[derive(Clone)]
pub struct SessionId(String);

impl SessionId {
    /// Accepts only the shape [`SessionStore::create`] makes (64 lowercase
    /// hex characters). Anything else is treated as no session at all, and
    /// never reaches Redis.
    pub fn parse(raw: &str) -> Option<Self> {
        is_token(raw).then(|| Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn generate() -> Self {
        Self(random_token())
    }
}

/// The id is a bearer credential: it must not end up in a log line.
impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionId(<redacted>)")
    }
}

/// How far through signing in a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Stage {
    /// Password accepted, TOTP code still to enter.
    AwaitingCode,
    SignedIn,
}

/// What Redis keeps about a session, as JSON.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct SessionData {
    pub admin_id: Uuid,
    /// `admins.session_generation` when the session was made; the guard
    /// refuses a session whose generation is no longer the admin's.
    pub generation: i64,
    pub stage: Stage,
    /// Random 32 bytes hex, made by [`SessionData::new`]; forms carry it.
    pub csrf_token: String,
    /// Unix seconds when the session was made: the absolute lifetime counts
    /// from here.
    pub created_at: i64,
    /// Failed TOTP codes so far in this sign-in (the code step gives up after a
    /// few).
    pub failed_codes: u32,
    /// A TOTP secret being enrolled, until the admin confirms it with a
    /// code, sealed for the admin's enrolment (`admin::totp_keys`): Redis
    /// never holds it plain. A new name rather than the old
    /// `pending_totp_secret`: the previous release, reading a session this
    /// one wrote, finds no pending secret and starts enrolment afresh,
    /// instead of taking the sealed bytes for a secret; its plain one, left
    /// in a session by the previous release, is ignored here and dropped at
    /// the next save.
    pub sealed_pending_totp_secret: Option<Vec<u8>>,
    /// The sign-in limits' charges of the right password, given back once
    /// the code is right too. Absent from sessions an earlier release wrote,
    /// and ignored by it: nothing is held then.
    #[serde(default)]
    pub held_charges: HeldCharges,
}

impl SessionData {
    /// A session made now, with a fresh CSRF token.
    pub fn new(admin_id: Uuid, generation: i64, stage: Stage) -> Self {
        Self {
            admin_id,
            generation,
            stage,
            csrf_token: random_token(),
            created_at: (unix_now_millis() / 1000) as i64,
            failed_codes: 0,
            sealed_pending_totp_secret: None,
            held_charges: HeldCharges::default(),
        }
    }
}

/// The CSRF token and a pending TOTP secret are credentials: Debug names
/// them without printing them.
impl fmt::Debug for SessionData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionData")
            .field("admin_id", &self.admin_id)
            .field("generation", &self.generation)
            .field("stage", &self.stage)
            .field("csrf_token", &"<redacted>")
            .field("created_at", &self.created_at)
            .field("failed_codes", &self.failed_codes)
            .field(
                "sealed_pending_totp_secret",
                &self
                    .sealed_pending_totp_secret
                    .as_ref()
                    .map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// A session as a request sees it: the id from its cookie and what Redis
/// holds for it.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: SessionId,
    pub data: SessionData,
}

/// Whom a remembered browser signed in as: the admin, and the session
/// generation then. A password change raises the generation, so browsers
/// remembered before it no longer count as the owner's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrowserOwner {
    pub admin_id: Uuid,
    pub generation: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Redis did not answer (down, timed out): sign-in and admin pages
    /// answer 503.
    #[error("the session store is unavailable")]
    Unavailable(#[source] anyhow::Error),
}

impl From<redis::RedisError> for SessionError {
    fn from(e: redis::RedisError) -> Self {
        Self::Unavailable(e.into())
    }
}

/// Where sessions and remembered browsers live. Cheap to clone: the copies
/// share one connection.
#[derive(Clone)]
pub struct SessionStore {
    redis: ConnectionManager,
    key_prefix: String,
    idle: Duration,
    lifetime: Duration,
}

impl SessionStore {
    /// Connects lazily, so the service starts (and serves its public pages)
    /// while Redis is down. Response and connection timeouts of 500 ms and at
    /// most one retry: during an outage a request fails within about a
    /// second instead of hanging. Must be called within a Tokio runtime.
    pub fn new(
        redis_uri: &secrecy::SecretString,
        key_prefix: &str,
        settings: &AdminSettings,
    ) -> Result<Self, anyhow::Error> {
        let client = redis::Client::open(redis_uri.expose_secret())
            .map_err(|e| anyhow::anyhow!("Invalid redis_uri: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let redis = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self {
            redis,
            key_prefix: key_prefix.to_owned(),
            idle: settings.session_idle_timeout(),
            lifetime: settings.session_lifetime(),
        })
    }

    /// Stores `data` under a fresh id and adds it to the admin's index. The
    /// id is always new (never one the browser sent), so a session cannot be
    /// fixed in advance by whoever planted a cookie.
    #[tracing::instrument(name = "Create an admin session", skip_all, fields(admin_id = %data.admin_id))]
    pub async fn create(&self, data: &SessionData) -> Result<SessionId, SessionError> {
        let value = encode(data);
        let ttl = self.ttl_for(data).unwrap_or(Duration::from_millis(1));
        let index = self.index_key(data.admin_id);
        within_deadline(async {
            // 256 random bits do not collide; NX turns "do not" into "cannot",
            // so a session is never written over another one.
            loop {
                let id = SessionId::generate();
                let key = self.session_key(&id);
                let options = SetOptions::default()
                    .conditional_set(ExistenceCheck::NX)
                    .with_expiration(SetExpiry::PX(millis(ttl)));
                let (stored,): (Option<String>,) = redis::pipe()
                    .atomic()
                    .set_options(&key, &value, options)
                    .sadd(&index, &key)
                    .ignore()
                    .pexpire(&index, millis(self.lifetime) as i64)
                    .ignore()
                    .query_async(&mut self.redis.clone())
                    .await?;
                if stored.is_some() {
                    return Ok(id);
                }
            }
        })
        .await
    }

    /// The session, if it exists and is within its lifetime. Each load
    /// starts the idle wait again, without ever letting the session outlive
    /// its lifetime. A session past its lifetime, or one whose value cannot
    /// be read (written by an incompatible version), is deleted.
    #[tracing::instrument(name = "Load an admin session", skip_all)]
    pub async fn load(&self, id: &SessionId) -> Result<Option<Session>, SessionError> {
        let key = self.session_key(id);
        within_deadline(async {
            let mut redis = self.redis.clone();
            let Some(value): Option<String> = redis.get(&key).await? else {
                return Ok(None);
            };
            let data = match serde_json::from_str::<SessionData>(&value) {
                Ok(data) => data,
                Err(e) => {
                    tracing::warn!(error = %e, "An unreadable session was deleted");
                    let () = redis.del(&key).await?;
                    return Ok(None);
                }
            };
            let Some(ttl) = self.ttl_for(&data) else {
                let () = redis.del(&key).await?;
                return Ok(None);
            };
            // Between the GET and here the session may have been destroyed:
            // PEXPIRE on a missing key does nothing, so it is not revived.
            let _: bool = redis.pexpire(&key, millis(ttl) as i64).await?;
            Ok(Some(Session {
                id: id.clone(),
                data,
            }))
        })
        .await
    }

    /// The session's data, if it exists and is within its lifetime, as
    /// [`SessionStore::load`] finds it but without starting the idle wait
    /// again: for checks made on the admin's behalf rather than by them, such
    /// as an open live-progress page asking every few seconds whether its
    /// session still stands. Sliding there would let a tab left open keep a
    /// session alive for its whole lifetime. Deletes nothing either: an
    /// unreadable or expired session is left to the next `load`.
    pub async fn peek(&self, id: &SessionId) -> Result<Option<SessionData>, SessionError> {
        let key = self.session_key(id);
        let value: Option<String> =
            within_deadline(async { Ok(self.redis.clone().get(&key).await?) }).await?;
        Ok(value
            .and_then(|value| serde_json::from_str::<SessionData>(&value).ok())
            .filter(|data| self.ttl_for(data).is_some()))
    }

    /// Stores new data under the same id, with the TTL rules of
    /// [`SessionStore::load`]. A session that has meanwhile been destroyed
    /// (sign-out elsewhere, password change) stays destroyed.
    #[tracing::instrument(name = "Save an admin session", skip_all)]
    pub async fn save(&self, session: &Session) -> Result<(), SessionError> {
        let key = self.session_key(&session.id);
        let value = encode(&session.data);
        let ttl = self.ttl_for(&session.data);
        within_deadline(async {
            let mut redis = self.redis.clone();
            match ttl {
                Some(ttl) => {
                    let options = SetOptions::default()
                        .conditional_set(ExistenceCheck::XX)
                        .with_expiration(SetExpiry::PX(millis(ttl)));
                    let _: Option<String> = redis.set_options(&key, value, options).await?;
                }
                None => {
                    let () = redis.del(&key).await?;
                }
            }
            Ok(())
        })
        .await
    }

    #[tracing::instrument(name = "Destroy an admin session", skip_all)]
    pub async fn destroy(&self, id: &SessionId) -> Result<(), SessionError> {
        let key = self.session_key(id);
        within_deadline(async {
            let () = self.redis.clone().del(&key).await?;
            Ok(())
        })
        .await
    }

    /// Ends every session of this admin (after a password change): deletes
    /// each key in the admin's index, and takes those keys out of the index.
    #[tracing::instrument(name = "Destroy every session of an admin", skip_all, fields(%admin_id))]
    pub async fn destroy_all(&self, admin_id: Uuid) -> Result<(), SessionError> {
        let index = self.index_key(admin_id);
        within_deadline(async {
            let mut redis = self.redis.clone();
            let keys: Vec<String> = redis.smembers(&index).await?;
            if keys.is_empty() {
                return Ok(());
            }
            // SREM of exactly the keys deleted, not DEL of the set: a session
            // created between the SMEMBERS and this keeps its index entry,
            // and the next destroy_all still finds it.
            let () = redis::pipe()
                .atomic()
                .del(&keys)
                .ignore()
                .srem(&index, &keys)
                .ignore()
                .query_async(&mut redis)
                .await?;
            Ok(())
        })
        .await
    }

    /// A long-lived random token for a browser that signed in to this admin
    /// successfully, kept for 30 days. Sign-in attempts from a remembered
    /// browser draw on their own limit, so someone hammering an account's
    /// sign-in cannot lock its owner out.
    #[tracing::instrument(name = "Remember a browser", skip_all, fields(admin_id = %owner.admin_id))]
    pub async fn remember_device(&self, owner: BrowserOwner) -> Result<String, SessionError> {
        let token = random_token();
        let key = self.device_key(&token);
        let value = format!("{}:{}", owner.admin_id, owner.generation);
        within_deadline(async {
            let () = self
                .redis
                .clone()
                .set_ex(&key, value, DEVICE_LIFETIME.as_secs())
                .await?;
            Ok(())
        })
        .await?;
        Ok(token)
    }

    /// The admin a device token was issued to, if it is known and unexpired.
    /// A token of the wrong shape is answered without asking Redis.
    #[tracing::instrument(name = "Recognise a browser", skip_all)]
    pub async fn device_admin(&self, token: &str) -> Result<Option<BrowserOwner>, SessionError> {
        if !is_token(token) {
            return Ok(None);
        }
        let key = self.device_key(token);
        let owner: Option<String> =
            within_deadline(async { Ok(self.redis.clone().get(&key).await?) }).await?;
        Ok(owner.and_then(|owner| {
            let (admin_id, generation) = owner.split_once(':')?;
            Some(BrowserOwner {
                admin_id: Uuid::parse_str(admin_id).ok()?,
                generation: generation.parse().ok()?,
            })
        }))
    }

    /// Whether Redis answers now (for the sign-in page or readiness).
    pub async fn is_available(&self) -> bool {
        within_deadline(async {
            let _: String = redis::cmd("PING")
                .query_async(&mut self.redis.clone())
                .await?;
            Ok(())
        })
        .await
        .is_ok()
    }

    fn ttl_for(&self, data: &SessionData) -> Option<Duration> {
        time_left(data.created_at, self.lifetime, self.idle, unix_now_millis())
    }

    fn session_key(&self, id: &SessionId) -> String {
        format!("{}session:{}", self.key_prefix, sha256_hex(id.as_str()))
    }

    fn index_key(&self, admin_id: Uuid) -> String {
        format!("{}admin_sessions:{}", self.key_prefix, admin_id)
    }

    fn device_key(&self, token: &str) -> String {
        format!("{}device:{}", self.key_prefix, sha256_hex(token))
    }
}

/// How long a session made at `created_at` (unix seconds) may still live at
/// `now_ms` (unix milliseconds): the idle timeout, or less when its lifetime
/// ends sooner. `None` once the lifetime is over.
fn time_left(
    created_at: i64,
    lifetime: Duration,
    idle: Duration,
    now_ms: u128,
) -> Option<Duration> {
    let ends_at_ms = i128::from(created_at) * 1000 + lifetime.as_millis() as i128;
    let left_ms = ends_at_ms - now_ms as i128;
    if left_ms <= 0 {
        return None;
    }
    let left = Duration::from_millis(u64::try_from(left_ms).unwrap_or(u64::MAX));
    Some(left.min(idle))
}

/// Runs `operation`, giving up once [`OPERATION_DEADLINE`] has passed.
async fn within_deadline<T>(
    operation: impl Future<Output = Result<T, SessionError>>,
) -> Result<T, SessionError> {
    match tokio::time::timeout(OPERATION_DEADLINE, operation).await {
        Ok(outcome) => outcome,
        Err(_) => Err(SessionError::Unavailable(anyhow::anyhow!(
            "Redis did not answer within {OPERATION_DEADLINE:?}"
        ))),
    }
}

fn encode(data: &SessionData) -> String {
    serde_json::to_string(data).expect("SessionData has no map keys or floats that JSON refuses")
}

/// 32 bytes from the thread-local CSPRNG, as lowercase hex.
fn random_token() -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::fill(&mut bytes);
    hex::encode(bytes)
}

/// Whether `raw` has the shape of [`random_token`]'s output.
fn is_token(raw: &str) -> bool {
    raw.len() == TOKEN_BYTES * 2 && raw.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn sha256_hex(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))
}

fn unix_now_millis() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
}

/// A positive number of milliseconds, as Redis expiry arguments need.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_id_is_64_lowercase_hex_characters() {
        let id = SessionId::generate();
        assert!(SessionId::parse(id.as_str()).is_some());
        assert_eq!(id.as_str().len(), 64);
    }

    #[test]
    fn a_cookie_of_the_wrong_shape_is_no_session() {
        let valid = "a".repeat(64);
        for (case, raw) in [
            ("empty", String::new()),
            ("too short", "a".repeat(63)),
            ("too long", "a".repeat(65)),
            ("uppercase", "A".repeat(64)),
            ("not hex", "g".repeat(64)),
            ("with a space", format!(" {}", &valid[1..])),
            ("non-ASCII", format!("é{}", &valid[2..])),
        ] {
            assert!(SessionId::parse(&raw).is_none(), "{case} was accepted");
        }
        assert!(SessionId::parse(&valid).is_some());
    }

    #[test]
    fn two_session_ids_differ() {
        assert_ne!(
            SessionId::generate().as_str(),
            SessionId::generate().as_str()
        );
    }

    #[test]
    fn debug_does_not_print_the_id_the_csrf_token_or_a_pending_secret() {
        let id = SessionId::generate();
        let mut data = SessionData::new(Uuid::new_v4(), 3, Stage::SignedIn);
        data.sealed_pending_totp_secret = Some(b"0123456789abcdefghij".to_vec());
        let session = Session {
            id: id.clone(),
            data: data.clone(),
        };
        let printed = format!("{session:?}");
        assert!(!printed.contains(id.as_str()), "{printed}");
        assert!(!printed.contains(&data.csrf_token), "{printed}");
        assert!(!printed.contains("48, 49, 50"), "{printed}");
        assert!(printed.contains(&data.admin_id.to_string()), "{printed}");
    }

    #[test]
    fn a_new_session_has_a_fresh_csrf_token_and_no_failed_codes() {
        let admin = Uuid::new_v4();
        let a = SessionData::new(admin, 0, Stage::AwaitingCode);
        let b = SessionData::new(admin, 0, Stage::AwaitingCode);
        assert!(is_token(&a.csrf_token));
        assert_ne!(a.csrf_token, b.csrf_token);
        assert_eq!(a.failed_codes, 0);
        assert!(a.sealed_pending_totp_secret.is_none());
        let now = (unix_now_millis() / 1000) as i64;
        assert!((now - a.created_at).abs() <= 1);
    }

    #[test]
    fn session_data_survives_a_round_trip_through_json() {
        let mut data = SessionData::new(Uuid::new_v4(), 7, Stage::AwaitingCode);
        data.failed_codes = 2;
        data.sealed_pending_totp_secret = Some(vec![1, 2, 3]);
        let back: SessionData = serde_json::from_str(&encode(&data)).unwrap();
        assert_eq!(back.admin_id, data.admin_id);
        assert_eq!(back.generation, 7);
        assert_eq!(back.stage, Stage::AwaitingCode);
        assert_eq!(back.csrf_token, data.csrf_token);
        assert_eq!(back.failed_codes, 2);
        assert_eq!(back.sealed_pending_totp_secret, Some(vec![1, 2, 3]));
    }

    #[test]
    fn a_plain_pending_secret_from_the_previous_release_is_read_as_none_and_not_written_back() {
        let data = SessionData::new(Uuid::new_v4(), 1, Stage::SignedIn);
        let mut old: serde_json::Value = serde_json::from_str(&encode(&data)).unwrap();
        let object = old.as_object_mut().unwrap();
        object.remove("sealed_pending_totp_secret");
        object.insert("pending_totp_secret".into(), serde_json::json!([1, 2, 3]));
        let back: SessionData = serde_json::from_value(old).unwrap();
        assert!(back.sealed_pending_totp_secret.is_none());
        assert!(!encode(&back).contains("\"pending_totp_secret\""));
    }

    #[test]
    fn a_session_lives_for_the_idle_timeout_while_its_lifetime_is_far_off() {
        let idle = Duration::from_secs(60);
        let left = time_left(1_000, Duration::from_secs(3_600), idle, 1_000_000 + 10_000);
        assert_eq!(left, Some(idle));
    }

    #[test]
    fn near_the_end_of_its_lifetime_a_session_lives_only_until_then() {
        let left = time_left(
            1_000,
            Duration::from_secs(3_600),
            Duration::from_secs(60),
            (1_000 + 3_600) * 1000 - 1_500,
        );
        assert_eq!(left, Some(Duration::from_millis(1_500)));
    }

    #[test]
    fn a_session_past_its_lifetime_has_no_time_left() {
        let lifetime = Duration::from_secs(3_600);
        let idle = Duration::from_secs(60);
        assert_eq!(
            time_left(1_000, lifetime, idle, (1_000 + 3_600) * 1000),
            None
        );
        assert_eq!(time_left(1_000, lifetime, idle, u128::from(u64::MAX)), None);
    }
}
