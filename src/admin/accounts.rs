//! The `admins` table and its recovery codes: every query the newsroom runs
//! on an account. Each function takes a `&mut PgConnection`, so it works as
//! well on a connection from the pool as inside the caller's transaction
//! (`&mut **transaction`); none opens a transaction of its own.
//!
//! Usernames reach here already parsed ([`AdminUsername`]), hence lower
//! case, and are compared as `lower(username)` so that the unique index
//! `admins_username_key` both serves the lookup and refuses a second `Ada`.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::admin::username::AdminUsername;
use crate::domain::SubscriberEmail;

/// One row of `admins`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Admin {
    pub id: Uuid,
    pub username: String,
    pub email: Option<String>,
    /// Argon2id, PHC string: see `admin::password`.
    pub password_hash: String,
    /// Present once the admin has enrolled a second factor. Sealed
    /// (`admin::totp_keys`); plain 20 bytes if stored before secrets were
    /// sealed and not used since.
    pub totp_secret: Option<Vec<u8>>,
    /// The last TOTP time step a code was accepted for.
    pub totp_last_step: Option<i64>,
    /// Raised by every password change; a session made under an older
    /// generation is no longer honoured.
    pub session_generation: i64,
}

pub async fn find_by_username(
    conn: &mut PgConnection,
    username: &AdminUsername,
) -> Result<Option<Admin>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, username, email, password_hash, totp_secret, totp_last_step, \
                session_generation \
         FROM admins WHERE lower(username) = $1",
    )
    .bind(username.as_ref())
    .fetch_optional(conn)
    .await
}

pub async fn find(conn: &mut PgConnection, id: Uuid) -> Result<Option<Admin>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, username, email, password_hash, totp_secret, totp_last_step, \
                session_generation \
         FROM admins WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Why an admin was not created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("an admin named {0} already exists")]
    UsernameTaken(String),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// Adds an admin and returns their id. A username taken already, in any
/// letter case, is [`CreateError::UsernameTaken`]: the unique index decides,
/// so two concurrent creations cannot both succeed.
pub async fn create(
    conn: &mut PgConnection,
    username: &AdminUsername,
    email: Option<&SubscriberEmail>,
    password_hash: &str,
) -> Result<Uuid, CreateError> {
    let id = Uuid::new_v4();
    let inserted = sqlx::query(
        "INSERT INTO admins (id, username, email, password_hash) VALUES ($1, $2, $3, $4)",
    )
    .bind(id)
    .bind(username.as_ref())
    .bind(email.map(AsRef::as_ref))
    .bind(password_hash)
    .execute(conn)
    .await;
    match inserted {
        Ok(_) => Ok(id),
        Err(e)
            if e.as_database_error()
                .is_some_and(|db| db.constraint() == Some("admins_username_key")) =>
        {
            Err(CreateError::UsernameTaken(username.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}

/// A new password: stores the hash, sets `password_changed_at = now()` and
/// raises `session_generation` by one, which ends every session made before.
/// Returns the new generation; [`sqlx::Error::RowNotFound`] if there is no
/// such admin.
pub async fn change_password(
    conn: &mut PgConnection,
    id: Uuid,
    password_hash: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE admins \
         SET password_hash = $2, password_changed_at = now(), \
             session_generation = session_generation + 1 \
         WHERE id = $1 \
         RETURNING session_generation",
    )
    .bind(id)
    .bind(password_hash)
    .fetch_one(conn)
    .await
}

/// The same password under stronger parameters (after a sign-in): stores the
/// hash and nothing else, so sessions live on. [`sqlx::Error::RowNotFound`]
/// if there is no such admin.
pub async fn upgrade_hash(
    conn: &mut PgConnection,
    id: Uuid,
    password_hash: &str,
) -> Result<(), sqlx::Error> {
    let updated = sqlx::query("UPDATE admins SET password_hash = $2 WHERE id = $1")
        .bind(id)
        .bind(password_hash)
        .execute(conn)
        .await?;
    one_row(updated.rows_affected())
}

/// Sets or clears the admin's email address. [`sqlx::Error::RowNotFound`] if
/// there is no such admin.
pub async fn set_email(
    conn: &mut PgConnection,
    id: Uuid,
    email: Option<&SubscriberEmail>,
) -> Result<(), sqlx::Error> {
    let updated = sqlx::query("UPDATE admins SET email = $2 WHERE id = $1")
        .bind(id)
        .bind(email.map(AsRef::as_ref))
        .execute(conn)
        .await?;
    one_row(updated.rows_affected())
}

/// Turns TOTP on: stores the secret (sealed by the caller for this admin's
/// row), clears `totp_last_step` (steps counted
/// under an old secret mean nothing under a new one), and replaces all
/// recovery codes with these SHA-256 hashes.
///
/// Call it inside a transaction: these are three statements, and an admin
/// left with the new secret but the old recovery codes (or none) would be
/// worse off than one whose enrolment failed as a whole.
/// [`sqlx::Error::RowNotFound`] if there is no such admin.
pub async fn enable_totp(
    conn: &mut PgConnection,
    id: Uuid,
    secret: &[u8],
    recovery_code_hashes: &[Vec<u8>],
) -> Result<(), sqlx::Error> {
    let updated =
        sqlx::query("UPDATE admins SET totp_secret = $2, totp_last_step = NULL WHERE id = $1")
            .bind(id)
            .bind(secret)
            .execute(&mut *conn)
            .await?;
    one_row(updated.rows_affected())?;
    sqlx::query("DELETE FROM admin_recovery_codes WHERE admin_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    // One statement for all the codes; a duplicate among them is kept once.
    sqlx::query(
        "INSERT INTO admin_recovery_codes (admin_id, code_hash) \
         SELECT $1, code_hash FROM unnest($2::bytea[]) AS code_hash \
         ON CONFLICT DO NOTHING",
    )
    .bind(id)
    .bind(recovery_code_hashes)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Stores `resealed` in place of `stored`, the same secret sealed under the
/// current key. Only if the row still holds `stored`: an enrolment that
/// replaced the secret meanwhile wins. `false` if it did.
pub async fn replace_totp_secret(
    conn: &mut PgConnection,
    id: Uuid,
    stored: &[u8],
    resealed: &[u8],
) -> Result<bool, sqlx::Error> {
    let updated =
        sqlx::query("UPDATE admins SET totp_secret = $3 WHERE id = $1 AND totp_secret = $2")
            .bind(id)
            .bind(stored)
            .bind(resealed)
            .execute(conn)
            .await?;
    Ok(updated.rows_affected() == 1)
}

/// Every admin with a second factor, and their stored secret: for sealing
/// them all again under the current key.
pub async fn totp_secrets(conn: &mut PgConnection) -> Result<Vec<(Uuid, Vec<u8>)>, sqlx::Error> {
    sqlx::query_as("SELECT id, totp_secret FROM admins WHERE totp_secret IS NOT NULL ORDER BY id")
        .fetch_all(conn)
        .await
}

/// Records that a code for time step `step` was accepted. `false` when that
/// step, or a later one, was used already: the code is a replay (or an
/// older code than one already seen) and must be refused.
///
/// The check and the write are one statement, so two sign-ins racing with
/// the same code cannot both get `true`.
pub async fn accept_totp_step(
    conn: &mut PgConnection,
    id: Uuid,
    step: i64,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE admins SET totp_last_step = $2 \
         WHERE id = $1 AND (totp_last_step IS NULL OR totp_last_step < $2)",
    )
    .bind(id)
    .bind(step)
    .execute(conn)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Marks one unused recovery code used. `false` when the admin has no such
/// code, or used it already. Like [`accept_totp_step`], one statement, so a
/// code cannot be spent twice by two racing requests.
pub async fn use_recovery_code(
    conn: &mut PgConnection,
    id: Uuid,
    code_hash: &[u8],
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE admin_recovery_codes SET used_at = now() \
         WHERE admin_id = $1 AND code_hash = $2 AND used_at IS NULL",
    )
    .bind(id)
    .bind(code_hash)
    .execute(conn)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// How many recovery codes the admin has left.
pub async fn unused_recovery_codes(conn: &mut PgConnection, id: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM admin_recovery_codes WHERE admin_id = $1 AND used_at IS NULL",
    )
    .bind(id)
    .fetch_one(conn)
    .await
}

/// An update by primary key touches one row, or the admin does not exist.
fn one_row(rows_affected: u64) -> Result<(), sqlx::Error> {
    if rows_affected == 0 {
        Err(sqlx::Error::RowNotFound)
    } else {
        Ok(())
    }
}
