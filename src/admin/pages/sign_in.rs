//! `GET|POST /login`, `GET|POST /login/code` (the second factor) and
//! `POST /admin/logout`.
//!
//! A wrong username and a wrong password get the same answer after the same
//! work: an unknown username is checked against a dummy hash. Every attempt
//! counts against the client's IP and the pair (account, address) it names
//! (or, for a browser that signed in to that account before, that browser's
//! own allowance), and attempts on one account from everywhere are slowed
//! down, never refused: see `RateLimiter::check_login`. Codes at the second
//! step count the same way. Failures are counted per window and account
//! (`crate::admin::sign_in_failures`), not written to the audit log one by
//! one. The form carries a CSRF token tied to a pre-session cookie
//! (`crate::admin::sign_in_form`). Each step of a sign-in gets a new session
//! id, so an id planted in a browser before sign-in is worth nothing after
//! it.

use std::net::IpAddr;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use secrecy::SecretString;
use serde::Deserialize;

use crate::admin::accounts::{self, Admin};
use crate::admin::actor::{actor_for, record};
use crate::admin::audit::{self, Action, Actor};
use crate::admin::cookies::SessionCookies;
use crate::admin::guard::{
    Protected, check_csrf, parse_fields, session_store, sessions_unavailable,
};
use crate::admin::pages::sign_in_page::sign_in_page;
use crate::admin::pages::templates::CodePage;
use crate::admin::password::{self, Asker, Verified};
use crate::admin::sessions::{BrowserOwner, Session, SessionData, SessionStore, Stage};
use crate::admin::totp;
use crate::admin::totp_keys::{Opened, Place, TotpKeys};
use crate::admin::username::AdminUsername;
use crate::admin::{sign_in_failures, sign_in_form};
use crate::db::Db;
use crate::domain::Newsletter;
use crate::pages::page;
use crate::rate_limit::{LoginSubject, RateLimiter};
use crate::web::answers::{no_store, see_other, too_many_attempts, with_cookies, with_retry_after};
use crate::web::client::client_ip;
use crate::web::error::{ApiError, DatabaseStep, try_again_in};

/// Wrong codes one sign-in may try before it starts over from the password.
const CODE_ATTEMPTS: u32 = 5;

/// How long the second step waits for its code. Short: a half-done sign-in
/// is worth something to whoever holds its cookie.
const CODE_STEP_LIFETIME: Duration = Duration::from_secs(5 * 60);

const WRONG_CREDENTIALS: &str = "The username or password is wrong.";
const UNAVAILABLE: &str = "Signing in is unavailable right now. Please try again in a few minutes.";

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Notice {
    notice: Option<String>,
}

/// The sign-in form; a browser already signed in goes straight on.
#[utoipa::path(get, path = "/login", tag = "sign-in",
    params(Notice),
    responses(
        (status = 200, description = "The sign-in form, with its CSRF token, and the pre-session cookie the token is tied to.", body = String, content_type = "text/html", headers(("Set-Cookie" = String))),
        (status = 303, description = "Already signed in: to the dashboard.", headers(("Location" = String))),
        (status = 400, description = "A query string that cannot be read.", body = String, content_type = "text/plain"),
        (status = 503, description = "The session store is unavailable.", content((String = "text/html"), (String = "text/plain")), headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
    ))]
pub async fn login_page(
    request: HttpRequest,
    query: web::Query<Notice>,
    cookies: web::Data<SessionCookies>,
    newsletter: web::Data<Newsletter>,
) -> Result<HttpResponse, ApiError> {
    // Only known notices are shown: the query string is not a way to put
    // words on this page.
    let notice = match query.notice.as_deref() {
        Some("signed-out") => Some("You are signed out."),
        Some("password-changed") => Some("Your password was changed. Sign in with the new one."),
        Some("code-attempts") => Some("Too many wrong codes. Sign in again."),
        Some("code-expired") => Some("The sign-in took too long. Sign in again."),
        _ => None,
    };
    let form = |status, error| sign_in_page(status, &cookies, &newsletter, "", error, notice);
    let store = session_store(&request);
    if !store.is_available().await {
        return Ok(unavailable(form(
            StatusCode::SERVICE_UNAVAILABLE,
            Some(UNAVAILABLE),
        )));
    }
    if let Some(session) = current_session(&request, &cookies).await?
        && session.data.stage == Stage::SignedIn
        && notice.is_none()
    {
        // The dashboard's guard decides whether that session is still any
        // good; a stale one comes back here without the cookie.
        return Ok(see_other("/admin/dashboard"));
    }
    Ok(form(StatusCode::OK, None))
}

/// The session the browser's cookie names, if it names one.
async fn current_session(
    request: &HttpRequest,
    cookies: &SessionCookies,
) -> Result<Option<Session>, ApiError> {
    let Some(id) = cookies.session_id(request) else {
        return Ok(None);
    };
    session_store(request)
        .load(&id)
        .await
        .map_err(sessions_unavailable)
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct Credentials {
    #[serde(default)]
    username: String,
    #[schema(value_type = Option<String>)]
    password: Option<SecretString>,
    /// The token of the form `GET /login` gave this browser.
    csrf_token: Option<String>,
}

#[utoipa::path(post, path = "/login", tag = "sign-in",
    request_body(content = inline(Credentials), content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Signed in (to the dashboard), or on to the code step (to /login/code).", headers(("Location" = String))),
        (status = 400, description = "A form that cannot be read.", body = String, content_type = "text/plain"),
        (status = 401, description = "Wrong username or password: the form again.", body = String, content_type = "text/html"),
        (status = 403, description = "Without the CSRF token of a form `GET /login` gave this browser, with another browser's, or with one older than 20 minutes: the form again, with a fresh token and the reason.", body = String, content_type = "text/html", headers(("Set-Cookie" = String))),
        (status = 429, description = "Too many attempts from this address: the form again.", body = String, content_type = "text/html", headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
        (status = 503, description = "The session store or the database is unavailable.", content((String = "text/html"), (String = "text/plain")), headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
        crate::web::openapi_responses::FormRefusals,
    ))]
#[tracing::instrument(name = "Sign in", skip_all, fields(username = tracing::field::Empty))]
pub async fn log_in(
    request: HttpRequest,
    form: web::Form<Credentials>,
    db: web::Data<Db>,
    limiter: web::Data<RateLimiter>,
    cookies: web::Data<SessionCookies>,
    newsletter: web::Data<Newsletter>,
) -> Result<HttpResponse, ApiError> {
    let Credentials {
        username,
        password,
        csrf_token,
    } = form.into_inner();
    let password = password.unwrap_or_else(|| SecretString::from(""));
    // ASCII only: Unicode lower-casing would turn a Kelvin sign into a `k`
    // and sign in an admin under a name they never chose.
    let typed = username.trim().to_ascii_lowercase();
    let shown_again = username.chars().take(64).collect::<String>();
    let retry = |status, error| {
        sign_in_page(
            status,
            &cookies,
            &newsletter,
            &shown_again,
            Some(error),
            None,
        )
    };
    let nonce = cookies.sign_in_nonce(&request);
    let now = std::time::SystemTime::now();
    if let Err(refusal) = sign_in_form::check(nonce.as_deref(), csrf_token.as_deref(), now) {
        tracing::info!(?refusal, "Sign-in refused: no matching CSRF token");
        return Ok(retry(StatusCode::FORBIDDEN, refusal.reason()));
    }
    let store = session_store(&request);
    // Without Redis no session can be made: say so before the password is
    // checked, rather than after it was found right.
    if !store.is_available().await {
        tracing::warn!("Sign-in refused: the session store is unavailable");
        return Ok(unavailable(retry(
            StatusCode::SERVICE_UNAVAILABLE,
            UNAVAILABLE,
        )));
    }
    let ip = client_ip(&request, &limiter);
    let admin = match AdminUsername::parse(&typed) {
        Ok(username) => db
            .transaction(async |tx| accounts::find_by_username(tx, &username).await)
            .await
            .step("look up the admin")?,
        Err(_) => None,
    };
    // Only an account's name is logged: what else was typed may be anyone's
    // address, or a password typed into the wrong box.
    if let Some(admin) = &admin {
        tracing::Span::current().record("username", tracing::field::display(&admin.username));
    }
    let browser = cookies.browser_token(&request);
    let subject = attempt_subject(store, browser.as_deref(), admin.as_ref(), &typed).await?;
    // No transaction is open here: the check may wait (see its doc).
    let attempt = match limiter.check_login(ip, subject).await {
        Ok(attempt) => attempt,
        Err(retry_after) => {
            let error = format!("Too many sign-in attempts. {}", try_again_in(retry_after));
            let answer = retry(StatusCode::TOO_MANY_REQUESTS, &error);
            return Ok(with_retry_after(answer, retry_after));
        }
    };
    let stored = admin.as_ref().map(|admin| admin.password_hash.clone());
    let asker = match subject {
        LoginSubject::RememberedBrowser(_) => Asker::Vouched,
        _ => Asker::Anyone,
    };
    let verified = password::verify(asker, password, stored)
        .await
        .map_err(ApiError::Unexpected)?;
    let (admin, rehashed) = match (admin, verified) {
        (Some(admin), Verified::Yes { rehashed }) => (admin, rehashed),
        (admin, _) => {
            count_failure(&db, admin.as_ref(), ip).await?;
            return Ok(retry(StatusCode::UNAUTHORIZED, WRONG_CREDENTIALS));
        }
    };
    if let Some(rehashed) = rehashed {
        db.transaction(async |tx| accounts::upgrade_hash(tx, admin.id, &rehashed).await)
            .await
            .step("upgrade the password hash")?;
    }
    end_current_session(&request, &cookies).await?;
    if admin.totp_secret.is_some() {
        let mut data = SessionData::new(admin.id, admin.session_generation, Stage::AwaitingCode);
        data.held_charges = attempt.held_for_the_second_factor();
        let id = store.create(&data).await.map_err(sessions_unavailable)?;
        return with_cookies(see_other("/login/code"), [cookies.session(&id)]);
    }
    attempt.succeeded().await;
    signed_in(&request, &db, &cookies, &admin, ip, "with a password").await
}

/// The admin's TOTP secret, opened; `None` if it does not open (sealed
/// under a key no longer configured, or changed in the table). Codes then
/// fail closed, and recovery codes still sign in.
fn open_totp_secret(keys: &TotpKeys, admin: &Admin, stored: &[u8]) -> Option<Opened> {
    keys.open(stored, Place::Account(admin.id))
        .inspect_err(|e| {
            tracing::error!(
                admin_id = %admin.id,
                error = %e,
                "The admin's TOTP secret does not open: codes are refused, recovery codes still work"
            );
        })
        .ok()
}

/// Counts a failed sign-in on `admin` (None: a username that names no
/// account), and writes the audit row of the first failure of its window.
/// Later ones only add to the count the dashboard shows: a flood of
/// guesses or of random usernames leaves a bounded number of rows.
#[tracing::instrument(name = "Count a failed sign-in", skip_all)]
async fn count_failure(db: &Db, admin: Option<&Admin>, ip: Option<IpAddr>) -> Result<(), ApiError> {
    let account = admin.map(|a| a.username.as_str());
    db.transaction(async |tx| {
        if sign_in_failures::count(tx, account, ip).await? {
            // What was typed as an unknown username is not kept: it may be
            // anyone's address.
            let actor = Actor {
                admin_id: admin.map(|a| a.id),
                username: account.map(str::to_owned),
                client_ip: ip,
            };
            let detail = format!(
                "wrong username or password: the first failure on {} of a {}-minute window; \
                 the dashboard counts them all",
                account.unwrap_or("unknown usernames"),
                sign_in_failures::WINDOW_SECONDS / 60,
            );
            audit::record(tx, &actor, Action::SignInFailed, &detail).await?;
        }
        Ok(())
    })
    .await
    .step("count a failed sign-in")
}

/// What an attempt on `admin` counts against besides the client's IP: the
/// allowance of this browser when it signed in as this admin, under the
/// current password, before; the account's otherwise. The browser's token
/// is looked up whether or not the username exists: a lookup for existing
/// accounts only would make their answers a round trip slower.
async fn attempt_subject<'a>(
    store: &SessionStore,
    browser: Option<&'a str>,
    admin: Option<&Admin>,
    typed: &'a str,
) -> Result<LoginSubject<'a>, ApiError> {
    let Some(token) = browser else {
        return Ok(LoginSubject::Account(typed));
    };
    let owner = store
        .device_admin(token)
        .await
        .map_err(sessions_unavailable)?;
    let remembered = admin.is_some_and(|admin| {
        owner
            == Some(BrowserOwner {
                admin_id: admin.id,
                generation: admin.session_generation,
            })
    });
    Ok(if remembered {
        LoginSubject::RememberedBrowser(token)
    } else {
        LoginSubject::Account(typed)
    })
}

/// The last step of every sign-in: a new session, a remembered browser,
/// the audit entry, and on to the dashboard.
async fn signed_in(
    request: &HttpRequest,
    db: &Db,
    cookies: &SessionCookies,
    admin: &Admin,
    ip: Option<IpAddr>,
    how: &str,
) -> Result<HttpResponse, ApiError> {
    let store = session_store(request);
    let data = SessionData::new(admin.id, admin.session_generation, Stage::SignedIn);
    let id = store.create(&data).await.map_err(sessions_unavailable)?;
    let owner = BrowserOwner {
        admin_id: admin.id,
        generation: admin.session_generation,
    };
    let token = store
        .remember_device(owner)
        .await
        .map_err(sessions_unavailable)?;
    record(db, &actor_for(admin, ip), Action::SignIn, how).await?;
    with_cookies(
        see_other("/admin/dashboard"),
        [cookies.session(&id), cookies.remembered_browser(token)],
    )
}

/// Ends the session the browser arrived with, if any, so that signing in
/// never carries on an id someone else may know.
async fn end_current_session(
    request: &HttpRequest,
    cookies: &SessionCookies,
) -> Result<(), ApiError> {
    if let Some(id) = cookies.session_id(request) {
        session_store(request)
            .destroy(&id)
            .await
            .map_err(sessions_unavailable)?;
    }
    Ok(())
}

/// The second step, for an admin with TOTP on.
#[utoipa::path(get, path = "/login/code", tag = "sign-in",
    responses(
        (status = 200, description = "The code form, for a sign-in waiting for its second factor.", body = String, content_type = "text/html"),
        (status = 303, description = "No sign-in is waiting for a code: to /login.", headers(("Location" = String))),
        (status = 503, description = "The session store is unavailable.", body = String, content_type = "text/plain", headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
    ))]
pub async fn code_page(
    request: HttpRequest,
    cookies: web::Data<SessionCookies>,
    newsletter: web::Data<Newsletter>,
) -> Result<HttpResponse, ApiError> {
    match awaiting_code(&request, &cookies).await? {
        Ok(session) => Ok(code_form(&newsletter, StatusCode::OK, &session, None)),
        Err(back) => Ok(back),
    }
}

/// The session waiting for a code, or where to send a browser without one.
/// A session that waited past [`CODE_STEP_LIFETIME`] is ended.
async fn awaiting_code(
    request: &HttpRequest,
    cookies: &SessionCookies,
) -> Result<Result<Session, HttpResponse>, ApiError> {
    let Some(session) = current_session(request, cookies).await? else {
        return Ok(Err(see_other("/login")));
    };
    if session.data.stage != Stage::AwaitingCode {
        return Ok(Err(see_other("/login")));
    }
    let started =
        std::time::UNIX_EPOCH + Duration::from_secs(session.data.created_at.max(0) as u64);
    if started.elapsed().unwrap_or_default() > CODE_STEP_LIFETIME {
        return start_over(request, cookies, &session, "/login?notice=code-expired")
            .await
            .map(Err);
    }
    Ok(Ok(session))
}

/// Ends a half-done sign-in and sends the browser back to the password.
async fn start_over(
    request: &HttpRequest,
    cookies: &SessionCookies,
    session: &Session,
    to: &'static str,
) -> Result<HttpResponse, ApiError> {
    session_store(request)
        .destroy(&session.id)
        .await
        .map_err(sessions_unavailable)?;
    with_cookies(see_other(to), [cookies.no_session()])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SecondFactor {
    Code,
    RecoveryCode,
}

impl SecondFactor {
    /// How the sign-in went, for the audit log.
    fn describe(self) -> &'static str {
        match self {
            SecondFactor::Code => "with a password and a code",
            SecondFactor::RecoveryCode => "with a password and a recovery code",
        }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
struct CodeForm {
    #[serde(default)]
    code: String,
}

#[utoipa::path(post, path = "/login/code", tag = "sign-in",
    request_body(content = inline(CodeForm), content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Signed in, or no sign-in waiting for a code (to /login).", headers(("Location" = String))),
        (status = 400, description = "A form that cannot be read.", body = String, content_type = "text/plain"),
        (status = 401, description = "A wrong code: the form again.", body = String, content_type = "text/html"),
        (status = 403, description = "Without the sign-in's CSRF token.", body = String, content_type = "text/plain"),
        (status = 429, description = "Too many attempts: the form again.", body = String, content_type = "text/html", headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
        (status = 503, description = "The session store or the database is unavailable.", body = String, content_type = "text/plain", headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
        crate::web::openapi_responses::FormRefusals,
    ))]
#[tracing::instrument(name = "Check a sign-in code", skip_all)]
pub async fn submit_code(
    request: HttpRequest,
    form: web::Form<Vec<(String, String)>>,
    db: web::Data<Db>,
    limiter: web::Data<RateLimiter>,
    cookies: web::Data<SessionCookies>,
    newsletter: web::Data<Newsletter>,
    keys: web::Data<TotpKeys>,
) -> Result<HttpResponse, ApiError> {
    let mut session = match awaiting_code(&request, &cookies).await? {
        Ok(session) => session,
        Err(back) => return Ok(back),
    };
    check_csrf(&session.data, &form)?;
    let CodeForm { code } = parse_fields(&form)?;
    let admin = db
        .transaction(async |tx| accounts::find(tx, session.data.admin_id).await)
        .await
        .step("look up the admin")?;
    // The password this step followed must still be the admin's: a reset
    // since then ends the half-done sign-in as it ends sessions.
    let current = admin.filter(|a| a.session_generation == session.data.generation);
    let Some((admin, secret)) = current.and_then(|a| Some((a.clone(), a.totp_secret?))) else {
        return start_over(&request, &cookies, &session, "/login").await;
    };
    let ip = client_ip(&request, &limiter);
    let browser = cookies.browser_token(&request);
    let subject = attempt_subject(
        session_store(&request),
        browser.as_deref(),
        Some(&admin),
        &admin.username,
    )
    .await?;
    let attempt = match limiter.check_login(ip, subject).await {
        Ok(attempt) => attempt,
        Err(retry_after) => {
            let error = too_many_attempts(retry_after);
            let status = StatusCode::TOO_MANY_REQUESTS;
            let answer = code_form(&newsletter, status, &session, Some(&error));
            return Ok(with_retry_after(answer, retry_after));
        }
    };
    let opened = open_totp_secret(&keys, &admin, &secret);
    let step = opened
        .as_ref()
        .and_then(|opened| totp::verify(&opened.secret, &code, std::time::SystemTime::now()));
    // A secret stored plain, or under a previous key, is sealed under the
    // current key once a code from it has been accepted.
    let resealed = opened
        .filter(|opened| opened.stale)
        .map(|opened| keys.seal(&opened.secret, Place::Account(admin.id)));
    let accepted = db
        .transaction(async |tx| match step {
            // A code is good once: the step it matched must be newer than
            // the last one used, or someone who saw it typed could use it
            // again.
            Some(step) => {
                let fresh = accounts::accept_totp_step(tx, admin.id, step).await?;
                if let (true, Some(resealed)) = (fresh, &resealed) {
                    accounts::replace_totp_secret(tx, admin.id, &secret, resealed).await?;
                }
                Ok(fresh.then_some(SecondFactor::Code))
            }
            None => {
                let hash = totp::hash_recovery_code(admin.id, &code);
                Ok(accounts::use_recovery_code(tx, admin.id, &hash)
                    .await?
                    .then_some(SecondFactor::RecoveryCode))
            }
        })
        .await
        .step("check the code")?;
    let store = session_store(&request);
    let Some(how) = accepted else {
        record(
            &db,
            &actor_for(&admin, ip),
            Action::SignInFailed,
            "wrong code",
        )
        .await?;
        session.data.failed_codes += 1;
        if session.data.failed_codes >= CODE_ATTEMPTS {
            return start_over(&request, &cookies, &session, "/login?notice=code-attempts").await;
        }
        store.save(&session).await.map_err(sessions_unavailable)?;
        let error = "That code is not right. Codes change every 30 seconds; try the current one.";
        return Ok(code_form(
            &newsletter,
            StatusCode::UNAUTHORIZED,
            &session,
            Some(error),
        ));
    };
    attempt
        .succeeded_after(std::mem::take(&mut session.data.held_charges))
        .await;
    if how == SecondFactor::RecoveryCode {
        record(&db, &actor_for(&admin, ip), Action::RecoveryCodeUsed, "").await?;
    }
    store
        .destroy(&session.id)
        .await
        .map_err(sessions_unavailable)?;
    signed_in(&request, &db, &cookies, &admin, ip, how.describe()).await
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct NoFields {}

/// Ends the admin's session and forgets the cookie.
#[utoipa::path(post, path = "/admin/logout", tag = "admin",
    request_body(content = inline(NoFields), content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Signed out: to /login.", headers(("Location" = String))),
        (status = 400, description = "A form that cannot be read.", body = String, content_type = "text/plain"),
        crate::web::openapi_responses::AdminForm,
    ))]
pub async fn log_out(
    request: HttpRequest,
    form: Protected<NoFields>,
    db: web::Data<Db>,
    limiter: web::Data<RateLimiter>,
    cookies: web::Data<SessionCookies>,
) -> Result<HttpResponse, ApiError> {
    let admin = &form.admin;
    session_store(&request)
        .destroy(&admin.session.id)
        .await
        .map_err(sessions_unavailable)?;
    let ip = client_ip(&request, &limiter);
    // The session is gone whatever the log says: a failure to write the
    // entry must not leave the browser thinking it is still signed in.
    if let Err(e) = record(&db, &actor_for(&admin.admin, ip), Action::SignOut, "").await {
        tracing::warn!(error = ?e, "Could not record a sign-out in the audit log");
    }
    with_cookies(
        see_other("/login?notice=signed-out"),
        [cookies.no_session()],
    )
}

fn unavailable(answer: HttpResponse) -> HttpResponse {
    with_retry_after(answer, Duration::from_secs(30))
}

fn code_form(
    newsletter: &Newsletter,
    status: StatusCode,
    session: &Session,
    error: Option<&str>,
) -> HttpResponse {
    let mut answer = page(
        status,
        &CodePage {
            newsletter,
            csrf_token: &session.data.csrf_token,
            error,
        },
    );
    no_store(answer.headers_mut());
    answer
}
