//! The sign-in form as a page. Sign-in shows it (empty, or again with a
//! reason), and so does the guard when the session store is down: both
//! build it here, so the guard needs nothing from the sign-in handlers.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;

use crate::admin::cookies::SessionCookies;
use crate::admin::pages::templates::LoginPage;
use crate::admin::sign_in_form;
use crate::domain::Newsletter;
use crate::pages::page;
use crate::web::answers::no_store;

/// The sign-in form, with a fresh CSRF token and the pre-session cookie it
/// is tied to: every answer that shows the form can be submitted.
pub fn sign_in_page(
    status: StatusCode,
    cookies: &SessionCookies,
    newsletter: &Newsletter,
    username: &str,
    error: Option<&str>,
    notice: Option<&str>,
) -> HttpResponse {
    let nonce = sign_in_form::new_nonce();
    let csrf_token = sign_in_form::token(&nonce, std::time::SystemTime::now());
    let mut answer = page(
        status,
        &LoginPage {
            newsletter,
            username,
            error,
            notice,
            csrf_token: &csrf_token,
        },
    );
    no_store(answer.headers_mut());
    if let Err(e) = answer.add_cookie(&cookies.sign_in_form(nonce)) {
        // A nonce is hex: the cookie is always well formed.
        tracing::error!(error = %e, "Could not set the sign-in form's cookie");
    }
    answer
}
