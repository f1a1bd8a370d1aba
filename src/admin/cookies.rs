//! The cookies of the admin side: the session, the token of a browser that
//! signed in before (see `RateLimiter::check_login`), and the short-lived
//! pre-session cookie of the sign-in form (see `crate::admin::sign_in_form`).

use actix_web::HttpRequest;
use actix_web::cookie::time::Duration as CookieDuration;
use actix_web::cookie::{Cookie, SameSite};

use crate::admin::sessions::SessionId;

/// How long a browser is remembered after it signed in.
const REMEMBERED_FOR: CookieDuration = CookieDuration::days(30);

/// Names and attributes of the admin cookies. Over HTTPS the names carry
/// the `__Host-` prefix, with which browsers accept a cookie only when it is
/// `Secure`, has `Path=/` and names no `Domain`: no other host or plain-HTTP
/// page can set or shadow it. Local runs serve plain HTTP, where a `Secure`
/// cookie would never come back, so they use plain names.
#[derive(Debug, Clone, Copy)]
pub struct SessionCookies {
    secure: bool,
}

impl SessionCookies {
    pub fn new(secure: bool) -> Self {
        Self { secure }
    }

    pub fn session_name(&self) -> &'static str {
        if self.secure {
            "__Host-session"
        } else {
            "session"
        }
    }

    fn browser_name(&self) -> &'static str {
        if self.secure {
            "__Host-browser"
        } else {
            "browser"
        }
    }

    fn sign_in_form_name(&self) -> &'static str {
        if self.secure {
            "__Host-sign-in"
        } else {
            "sign-in"
        }
    }

    /// The nonce of the sign-in form this browser was given, as sent.
    pub fn sign_in_nonce(&self, request: &HttpRequest) -> Option<String> {
        Some(request.cookie(self.sign_in_form_name())?.value().to_owned())
    }

    /// The pre-session cookie: as long-lived as the form it goes with.
    pub fn sign_in_form(&self, nonce: String) -> Cookie<'static> {
        let mut cookie = self.cookie(self.sign_in_form_name(), nonce);
        let lifetime = crate::admin::sign_in_form::FORM_LIFETIME.as_secs() as i64;
        cookie.set_max_age(CookieDuration::seconds(lifetime));
        cookie
    }

    /// The session id the request carries, if it is well formed.
    pub fn session_id(&self, request: &HttpRequest) -> Option<SessionId> {
        SessionId::parse(request.cookie(self.session_name())?.value())
    }

    /// The token of a browser that signed in before, as sent.
    pub fn browser_token(&self, request: &HttpRequest) -> Option<String> {
        Some(request.cookie(self.browser_name())?.value().to_owned())
    }

    /// Sets the session cookie. It has no expiry: it ends with the browser
    /// session, and Redis ends the session itself on its own timeouts.
    pub fn session(&self, id: &SessionId) -> Cookie<'static> {
        self.cookie(self.session_name(), id.as_str().to_owned())
    }

    /// Removes the session cookie from the browser.
    pub fn no_session(&self) -> Cookie<'static> {
        let mut cookie = self.cookie(self.session_name(), String::new());
        cookie.make_removal();
        cookie
    }

    pub fn remembered_browser(&self, token: String) -> Cookie<'static> {
        let mut cookie = self.cookie(self.browser_name(), token);
        cookie.set_max_age(REMEMBERED_FOR);
        cookie
    }

    /// Host-only (no `Domain`), for every path, out of reach of scripts, and
    /// never sent along with a request another site starts.
    fn cookie(&self, name: &'static str, value: String) -> Cookie<'static> {
        Cookie::build(name, value)
            .path("/")
            .http_only(true)
            .secure(self.secure)
            .same_site(SameSite::Strict)
            .finish()
    }
}
