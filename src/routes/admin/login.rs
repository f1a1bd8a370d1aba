//! `GET|POST /login`, `GET|POST /login/code` (the second factor) and
//! `POST /admin/logout`.
//!
//! A wrong username and a wrong password get the same answer after the same
//! work: an unknown username is checked against a dummy hash. Every attempt
//! counts against the client's IP and the account it names (or, for a
//! browser that signed in to that account before, that browser's own
//! allowance: see `RateLimiter::check_login`). Each step of a sign-in gets
//! a new session id, so an id planted in a browser before sign-in is worth
//! nothing after it.

use std::net::IpAddr;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use secrecy::SecretString;
use serde::Deserialize;

use crate::admin::accounts::{self, Admin};
use crate::admin::audit::{self, Action, Actor};
use crate::admin::password::{self, Verified};
use crate::admin::sessions::{Session, SessionData, Stage};
use crate::admin::totp::{self, TotpSecret};
use crate::admin::username::AdminUsername;
use crate::db::Db;
use crate::domain::Newsletter;
use crate::pages::page;
use crate::rate_limit::{Decision, LoginSubject, RateLimiter};
use crate::routes::admin::SessionCookies;
use crate::routes::admin::guard::{
    Protected, csrf_matches, csrf_refused, no_store, parse_fields, session_store,
    sessions_unavailable,
};
use crate::routes::admin::pages::{CodePage, LoginPage};
use crate::routes::error::{ApiError, DatabaseStep};

/// Wrong codes one sign-in may try before it starts over from the password.
const CODE_ATTEMPTS: u32 = 5;

const WRONG_CREDENTIALS: &str = "The username or password is wrong.";

#[derive(Deserialize)]
pub struct Notice {
    notice: Option<String>,
}

/// The sign-in form; a browser already signed in goes straight on.
pub async fn login_page(
    request: HttpRequest,
    query: web::Query<Notice>,
    cookies: web::Data<SessionCookies>,
    newsletter: web::Data<Newsletter>,
) -> HttpResponse {
    // Only known notices are shown: the query string is not a way to put
    // words on this page.
    let notice = match query.notice.as_deref() {
        Some("signed-out") => Some("You are signed out."),
        Some("password-changed") => Some("Your password was changed. Sign in with the new one."),
        Some("code-attempts") => Some("Too many wrong codes. Sign in again."),
        _ => None,
    };
    if cookies.session_id(&request).is_some() && notice.is_none() {
        // The dashboard's guard decides whether that session is any good;
        // a stale cookie comes back here without the redirect.
        if let Some(Ok(Some(session))) = load_session(&request, &cookies).await
            && session.data.stage == Stage::SignedIn
        {
            return see_other("/admin/dashboard");
        }
    }
    login_form(
        StatusCode::OK,
        &LoginPage {
            newsletter: &newsletter,
            notice,
            username: "",
            error: None,
        },
    )
}

async fn load_session(
    request: &HttpRequest,
    cookies: &SessionCookies,
) -> Option<Result<Option<Session>, ApiError>> {
    let id = cookies.session_id(request)?;
    Some(
        session_store(request)
            .load(&id)
            .await
            .map_err(sessions_unavailable),
    )
}

#[derive(Deserialize)]
pub struct Credentials {
    #[serde(default)]
    username: String,
    password: Option<SecretString>,
}

#[tracing::instrument(name = "Sign in", skip_all, fields(username = tracing::field::Empty))]
pub async fn log_in(
    request: HttpRequest,
    form: web::Form<Credentials>,
    db: web::Data<Db>,
    limiter: web::Data<RateLimiter>,
    cookies: web::Data<SessionCookies>,
    newsletter: web::Data<Newsletter>,
) -> Result<HttpResponse, ApiError> {
    let Credentials { username, password } = form.into_inner();
    let password = password.unwrap_or_else(|| SecretString::from(""));
    let typed = username.trim().to_lowercase();
    let shown_again = username.chars().take(64).collect::<String>();
    let retry = |status, error| {
        login_form(
            status,
            &LoginPage {
                newsletter: &newsletter,
                username: &shown_again,
                error: Some(error),
                notice: None,
            },
        )
    };
    let store = session_store(&request);
    // Without Redis no session can be made: say so before the password is
    // checked, rather than after it was found right.
    if !store.is_available().await {
        tracing::warn!("Sign-in refused: the session store is unavailable");
        let mut answer = retry(
            StatusCode::SERVICE_UNAVAILABLE,
            "Signing in is unavailable right now. Please try again in a few minutes.",
        );
        answer
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(30));
        return Ok(answer);
    }
    let ip = client_ip(&request, &limiter);
    let admin = match AdminUsername::parse(&typed) {
        Ok(username) => {
            tracing::Span::current().record("username", tracing::field::display(&username));
            db.transaction(async |tx| accounts::find_by_username(tx, &username).await)
                .await
                .step("look up the admin")?
        }
        Err(_) => None,
    };
    let browser = cookies.browser_token(&request);
    let remembered = match (&admin, &browser) {
        (Some(admin), Some(token)) => {
            store
                .device_admin(token)
                .await
                .map_err(sessions_unavailable)?
                == Some(admin.id)
        }
        _ => false,
    };
    let subject = match &browser {
        Some(token) if remembered => LoginSubject::RememberedBrowser(token),
        _ => LoginSubject::Account(&typed),
    };
    if let Decision::Limited { retry_after } = limiter.check_login(ip, subject).await {
        let mut answer = retry(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many sign-in attempts. Please wait a minute and try again.",
        );
        let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        answer
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        return Ok(answer);
    }
    let stored = admin.as_ref().map(|admin| admin.password_hash.clone());
    let verified = password::verify(password, stored)
        .await
        .map_err(ApiError::Unexpected)?;
    let (admin, rehashed) = match (admin, verified) {
        (Some(admin), Verified::Yes { rehashed }) => (admin, rehashed),
        (admin, _) => {
            let actor = Actor {
                admin_id: admin.as_ref().map(|a| a.id),
                username: Some(typed.chars().take(64).collect()),
                client_ip: ip,
            };
            record(
                &db,
                &actor,
                Action::SignInFailed,
                "wrong username or password",
            )
            .await?;
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
        let data = SessionData::new(admin.id, admin.session_generation, Stage::AwaitingCode);
        let id = store.create(&data).await.map_err(sessions_unavailable)?;
        let mut answer = see_other("/login/code");
        answer
            .add_cookie(&cookies.session(&id))
            .map_err(|e| ApiError::Unexpected(e.into()))?;
        return Ok(answer);
    }
    signed_in(&request, &db, &cookies, &admin, ip, "with a password").await
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
    let token = store
        .remember_device(admin.id)
        .await
        .map_err(sessions_unavailable)?;
    record(db, &actor_for(admin, ip), Action::SignIn, how).await?;
    let mut answer = see_other("/admin/dashboard");
    for cookie in [cookies.session(&id), cookies.remembered_browser(token)] {
        answer
            .add_cookie(&cookie)
            .map_err(|e| ApiError::Unexpected(e.into()))?;
    }
    Ok(answer)
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
pub async fn code_page(
    request: HttpRequest,
    cookies: web::Data<SessionCookies>,
    newsletter: web::Data<Newsletter>,
) -> Result<HttpResponse, ApiError> {
    match awaiting_code(&request, &cookies).await? {
        Some(session) => Ok(code_form(&newsletter, StatusCode::OK, &session, None)),
        None => Ok(see_other("/login")),
    }
}

async fn awaiting_code(
    request: &HttpRequest,
    cookies: &SessionCookies,
) -> Result<Option<Session>, ApiError> {
    let session = load_session(request, cookies).await.transpose()?.flatten();
    Ok(session.filter(|s| s.data.stage == Stage::AwaitingCode))
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

#[derive(Deserialize)]
struct CodeForm {
    #[serde(default)]
    code: String,
}

#[tracing::instrument(name = "Check a sign-in code", skip_all)]
pub async fn submit_code(
    request: HttpRequest,
    form: web::Form<Vec<(String, String)>>,
    db: web::Data<Db>,
    limiter: web::Data<RateLimiter>,
    cookies: web::Data<SessionCookies>,
    newsletter: web::Data<Newsletter>,
) -> Result<HttpResponse, ApiError> {
    let Some(mut session) = awaiting_code(&request, &cookies).await? else {
        return Ok(see_other("/login"));
    };
    let token = form
        .iter()
        .find(|(name, _)| name == "csrf_token")
        .map(|(_, value)| value.as_str());
    if !csrf_matches(&session.data, token) {
        return Err(csrf_refused());
    }
    let CodeForm { code } = parse_fields(&form)?;
    let admin = db
        .transaction(async |tx| accounts::find(tx, session.data.admin_id).await)
        .await
        .step("look up the admin")?;
    let (Some(admin), Some(secret)) = (admin.clone(), admin.and_then(|admin| admin.totp_secret))
    else {
        session_store(&request)
            .destroy(&session.id)
            .await
            .map_err(sessions_unavailable)?;
        return Ok(see_other("/login"));
    };
    let ip = client_ip(&request, &limiter);
    if let Decision::Limited { retry_after } = limiter
        .check_login(ip, LoginSubject::Account(&admin.username))
        .await
    {
        let mut answer = code_form(
            &newsletter,
            StatusCode::TOO_MANY_REQUESTS,
            &session,
            Some("Too many attempts. Please wait a minute and try again."),
        );
        let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        answer
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        return Ok(answer);
    }
    let secret = TotpSecret::from_bytes(secret);
    let step = totp::verify(&secret, &code, std::time::SystemTime::now());
    let accepted = db
        .transaction(async |tx| match step {
            // A code is good once: the step it matched must be newer than
            // the last one used, or someone who saw it typed could use it
            // again.
            Some(step) => Ok(accounts::accept_totp_step(tx, admin.id, step)
                .await?
                .then_some(SecondFactor::Code)),
            None => {
                let hash = totp::hash_recovery_code(&code);
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
            store
                .destroy(&session.id)
                .await
                .map_err(sessions_unavailable)?;
            let mut answer = see_other("/login?notice=code-attempts");
            answer
                .add_cookie(&cookies.no_session())
                .map_err(|e| ApiError::Unexpected(e.into()))?;
            return Ok(answer);
        }
        store.save(&session).await.map_err(sessions_unavailable)?;
        return Ok(code_form(
            &newsletter,
            StatusCode::UNAUTHORIZED,
            &session,
            Some("That code is not right. Codes change every 30 seconds; try the current one."),
        ));
    };
    if how == SecondFactor::RecoveryCode {
        record(&db, &actor_for(&admin, ip), Action::RecoveryCodeUsed, "").await?;
    }
    store
        .destroy(&session.id)
        .await
        .map_err(sessions_unavailable)?;
    signed_in(&request, &db, &cookies, &admin, ip, how.describe()).await
}

#[derive(Deserialize)]
pub struct NoFields {}

/// Ends this session and forgets the cookie.
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
    record(&db, &actor_for(&admin.admin, ip), Action::SignOut, "").await?;
    let mut answer = see_other("/login?notice=signed-out");
    answer
        .add_cookie(&cookies.no_session())
        .map_err(|e| ApiError::Unexpected(e.into()))?;
    Ok(answer)
}

pub fn client_ip(request: &HttpRequest, limiter: &RateLimiter) -> Option<IpAddr> {
    request
        .peer_addr()
        .map(|peer| limiter.client_ip().resolve(peer.ip(), request.headers()))
}

/// The audit log's actor for a signed-in (or signing-in) admin.
pub fn actor_for(admin: &Admin, ip: Option<IpAddr>) -> Actor {
    Actor {
        admin_id: Some(admin.id),
        username: Some(admin.username.clone()),
        client_ip: ip,
    }
}

pub async fn record(db: &Db, actor: &Actor, action: Action, detail: &str) -> Result<(), ApiError> {
    db.transaction(async |tx| audit::record(tx, actor, action, detail).await)
        .await
        .step("write the audit log")
}

pub fn see_other(location: &'static str) -> HttpResponse {
    let mut answer = HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .finish();
    no_store(answer.headers_mut());
    answer
}

fn login_form(status: StatusCode, login: &LoginPage<'_>) -> HttpResponse {
    let mut answer = page(status, login);
    no_store(answer.headers_mut());
    answer
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
