//! `GET|POST /admin/password` and `GET|POST /admin/totp`: the signed-in
//! admin's own account, its password and its second factor. (The address
//! test sends go to is set from the dashboard, so its form's handler,
//! `crate::routes::admin::email`, stands beside the dashboard.)

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use secrecy::SecretString;
use serde::Deserialize;

use crate::admin::accounts;
use crate::admin::actor::actor_for;
use crate::admin::audit::{self, Action};
use crate::admin::cookies::SessionCookies;
use crate::admin::guard::{Protected, SignedIn, session_store, sessions_unavailable};
use crate::admin::pages::layout::nav;
use crate::admin::pages::templates::{PasswordPage, RecoveryCodesPage, TotpPage};
use crate::admin::password::{self, Asker, NewPassword, Verified};
use crate::admin::totp::{self, TotpSecret};
use crate::admin::totp_keys::{Place, TotpKeys};
use crate::db::Db;
use crate::pages::page;
use crate::rate_limit::{LoginSubject, RateLimiter};
use crate::web::answers::{see_other, too_many_attempts, with_cookies, with_retry_after};
use crate::web::client::client_ip;
use crate::web::error::{ApiError, DatabaseStep};

#[utoipa::path(get, path = "/admin/password", tag = "admin",
    responses((status = 200, description = "The password form.", body = String, content_type = "text/html"), crate::web::openapi_responses::AdminOnly))]
pub async fn password_page(admin: SignedIn) -> HttpResponse {
    page(
        StatusCode::OK,
        &PasswordPage {
            newsletter: &admin.newsletter,
            nav: nav(&admin),
            error: None,
        },
    )
}

/// The outcome of asking a signed-in admin for their password again.
enum Recheck {
    Confirmed,
    Wrong,
    Limited(std::time::Duration),
}

/// Checks the password an admin typed to confirm a sensitive change. Someone
/// with a stolen session could guess it here as well as at the sign-in, so
/// it is limited, on the session's own budget: attempts on the account from
/// elsewhere must not keep its signed-in owner from changing the password.
/// Only wrong passwords spend it: the owner who types the right one with a
/// new password too weak, or a code not yet right, may try again at once.
async fn recheck_password(
    admin: &SignedIn,
    ip: Option<std::net::IpAddr>,
    limiter: &RateLimiter,
    typed: Option<SecretString>,
) -> Result<Recheck, ApiError> {
    let subject = LoginSubject::Session(admin.session.id.as_str());
    let attempt = match limiter.check_login(ip, subject).await {
        Ok(attempt) => attempt,
        Err(retry_after) => return Ok(Recheck::Limited(retry_after)),
    };
    let typed = typed.unwrap_or_else(|| SecretString::from(""));
    let verified = password::verify(
        Asker::Vouched,
        typed,
        Some(admin.admin.password_hash.clone()),
    )
    .await
    .map_err(ApiError::Unexpected)?;
    Ok(match verified {
        Verified::Yes { .. } => {
            attempt.succeeded().await;
            Recheck::Confirmed
        }
        Verified::No => Recheck::Wrong,
    })
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct PasswordForm {
    #[schema(value_type = Option<String>)]
    current_password: Option<SecretString>,
    #[schema(value_type = Option<String>)]
    new_password: Option<SecretString>,
    #[schema(value_type = Option<String>)]
    new_password_check: Option<SecretString>,
}

/// A new password ends every session of this admin, this one included:
/// whoever else had one (a stolen cookie, a forgotten browser) is out.
#[utoipa::path(post, path = "/admin/password", tag = "admin",
    request_body(content = inline(PasswordForm), content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Changed: every session ends, to /login.", headers(("Location" = String))),
        (status = 400, description = "Wrong current password, differing or too weak new ones: the form again; or a form that cannot be read.", content((String = "text/html"), (String = "text/plain"))),
        (status = 429, description = "Too many password checks.", body = String, content_type = "text/html", headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
        crate::web::openapi_responses::AdminForm,
    ))]
#[tracing::instrument(name = "Change a password", skip_all)]
pub async fn change_password(
    request: HttpRequest,
    form: Protected<PasswordForm>,
    db: web::Data<Db>,
    limiter: web::Data<RateLimiter>,
    cookies: web::Data<SessionCookies>,
) -> Result<HttpResponse, ApiError> {
    use secrecy::ExposeSecret;
    let Protected { admin, form } = form;
    let empty = || SecretString::from("");
    let refuse = |error: &str| {
        page(
            StatusCode::BAD_REQUEST,
            &PasswordPage {
                newsletter: &admin.newsletter,
                nav: nav(&admin),
                error: Some(error),
            },
        )
    };
    let ip = client_ip(&request, &limiter);
    match recheck_password(&admin, ip, &limiter, form.current_password).await? {
        Recheck::Confirmed => {}
        Recheck::Wrong => return Ok(refuse("The current password is wrong.")),
        Recheck::Limited(retry_after) => {
            let answer = page(
                StatusCode::TOO_MANY_REQUESTS,
                &PasswordPage {
                    newsletter: &admin.newsletter,
                    nav: nav(&admin),
                    error: Some(&too_many_attempts(retry_after)),
                },
            );
            return Ok(with_retry_after(answer, retry_after));
        }
    }
    let new = form.new_password.unwrap_or_else(empty);
    let check = form.new_password_check.unwrap_or_else(empty);
    if new.expose_secret() != check.expose_secret() {
        return Ok(refuse("The two new passwords differ."));
    }
    let new = match NewPassword::parse(new) {
        Ok(new) => new,
        Err(reason) => return Ok(refuse(&reason)),
    };
    let hash = password::hash(&new).await.map_err(ApiError::Unexpected)?;
    db.transaction(async |tx| {
        accounts::change_password(tx, admin.admin.id, &hash).await?;
        audit::record(
            tx,
            &actor_for(&admin.admin, ip),
            Action::PasswordChanged,
            "",
        )
        .await
    })
    .await
    .step("change the password")?;
    // The new generation already ends them on every replica; deleting them
    // is tidiness, and a failure here must not undo the change.
    if let Err(e) = session_store(&request).destroy_all(admin.admin.id).await {
        tracing::warn!(error = ?e, "Could not delete the sessions of an admin whose password changed");
    }
    with_cookies(
        see_other("/login?notice=password-changed"),
        [cookies.no_session()],
    )
}

/// Starts enrolment: a new secret, kept in the session until a code from
/// the app proves it was scanned, shown as a QR code and as text.
#[utoipa::path(get, path = "/admin/totp", tag = "admin",
    responses((status = 200, description = "Two-factor enrolment: a new secret, as a QR code and as text.", body = String, content_type = "text/html"), crate::web::openapi_responses::AdminOnly))]
pub async fn totp_page(
    request: HttpRequest,
    admin: SignedIn,
    keys: web::Data<TotpKeys>,
) -> Result<HttpResponse, ApiError> {
    // A secret already waiting is shown again: a reload, or the page open
    // in a second tab, must not make the code the admin just scanned wrong.
    if let Some(secret) = pending_secret(&admin, &keys) {
        return Ok(totp_form(&admin, &secret, StatusCode::OK, None));
    }
    let secret = TotpSecret::generate();
    let mut session = admin.session.clone();
    session.data.sealed_pending_totp_secret =
        Some(keys.seal(&secret, Place::Enrolment(admin.admin.id)));
    session_store(&request)
        .save(&session)
        .await
        .map_err(sessions_unavailable)?;
    Ok(totp_form(&admin, &secret, StatusCode::OK, None))
}

/// The secret waiting in the session for its first code, if there is one
/// and it opens. One that does not (sealed under a key since dropped) counts
/// as none: enrolment starts again with a new secret.
fn pending_secret(admin: &SignedIn, keys: &TotpKeys) -> Option<TotpSecret> {
    let sealed = admin.session.data.sealed_pending_totp_secret.as_ref()?;
    keys.open(sealed, Place::Enrolment(admin.admin.id))
        .inspect_err(|e| {
            tracing::warn!(error = %e, "A pending TOTP secret does not open: enrolment starts again");
        })
        .ok()
        .map(|opened| opened.secret)
}

fn totp_form(
    admin: &SignedIn,
    secret: &TotpSecret,
    status: StatusCode,
    error: Option<&str>,
) -> HttpResponse {
    let issuer = admin.newsletter.title();
    let url = totp::otpauth_url(secret, issuer, &admin.admin.username);
    page(
        status,
        &TotpPage {
            newsletter: &admin.newsletter,
            nav: nav(admin),
            already_enabled: admin.admin.totp_secret.is_some(),
            qr_svg: &totp::qr_svg(&url),
            secret: &secret.display_base32(),
            error,
        },
    )
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct EnrolForm {
    #[serde(default)]
    code: String,
    #[schema(value_type = Option<String>)]
    password: Option<SecretString>,
}

/// Turns TOTP on once a code from the app matches the pending secret, and
/// shows the recovery codes, the only time they are ever shown. The
/// password is asked for too: with a stolen session alone, nobody can put
/// their own app in place of the owner's, or turn the factor on for them.
#[utoipa::path(post, path = "/admin/totp", tag = "admin",
    request_body(content = inline(EnrolForm), content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Enrolled: the recovery codes, shown once.", body = String, content_type = "text/html"),
        (status = 303, description = "No enrolment under way: to /admin/totp.", headers(("Location" = String))),
        (status = 400, description = "Wrong password or code: the form again; or a form that cannot be read.", content((String = "text/html"), (String = "text/plain"))),
        (status = 429, description = "Too many password checks.", body = String, content_type = "text/html", headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
        crate::web::openapi_responses::AdminForm,
    ))]
#[tracing::instrument(name = "Enrol a second factor", skip_all)]
pub async fn enrol_totp(
    request: HttpRequest,
    form: Protected<EnrolForm>,
    db: web::Data<Db>,
    limiter: web::Data<RateLimiter>,
    keys: web::Data<TotpKeys>,
) -> Result<HttpResponse, ApiError> {
    let Protected { admin, form } = form;
    let Some(secret) = pending_secret(&admin, &keys) else {
        return Ok(see_other("/admin/totp"));
    };
    let ip = client_ip(&request, &limiter);
    match recheck_password(&admin, ip, &limiter, form.password).await? {
        Recheck::Confirmed => {}
        Recheck::Wrong => {
            let error = Some("The password is wrong.");
            return Ok(totp_form(&admin, &secret, StatusCode::BAD_REQUEST, error));
        }
        Recheck::Limited(retry_after) => {
            let error = too_many_attempts(retry_after);
            let status = StatusCode::TOO_MANY_REQUESTS;
            let answer = totp_form(&admin, &secret, status, Some(&error));
            return Ok(with_retry_after(answer, retry_after));
        }
    }
    let Some(step) = totp::verify(&secret, &form.code, std::time::SystemTime::now()) else {
        return Ok(totp_form(
            &admin,
            &secret,
            StatusCode::BAD_REQUEST,
            Some(
                "That code does not match. Check the app shows this newsletter and try the current code.",
            ),
        ));
    };
    let codes = totp::generate_recovery_codes();
    let hashes: Vec<Vec<u8>> = codes
        .iter()
        .map(|c| totp::hash_recovery_code(admin.admin.id, c))
        .collect();
    let sealed = keys.seal(&secret, Place::Account(admin.admin.id));
    db.transaction(async |tx| {
        accounts::enable_totp(tx, admin.admin.id, &sealed, &hashes).await?;
        // The code just typed counts as used.
        accounts::accept_totp_step(tx, admin.admin.id, step).await?;
        audit::record(tx, &actor_for(&admin.admin, ip), Action::TotpEnrolled, "").await
    })
    .await
    .step("turn on two-factor sign-in")?;
    let mut session = admin.session.clone();
    session.data.sealed_pending_totp_secret = None;
    session_store(&request)
        .save(&session)
        .await
        .map_err(sessions_unavailable)?;
    Ok(page(
        StatusCode::OK,
        &RecoveryCodesPage {
            newsletter: &admin.newsletter,
            nav: nav(&admin),
            codes: &codes,
        },
    ))
}
