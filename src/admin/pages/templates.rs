//! The templates of the sign-in and account pages (`src/templates/admin/`:
//! `login.html`, `login_code.html`, `password.html`, `totp.html`,
//! `recovery_codes.html`), and the [`Nav`] that every newsroom page, here
//! or in `crate::routes::admin`, shows at its top.

use askama::Template;

use crate::domain::Newsletter;

/// What every page behind the sign-in shows: who is signed in, and the
/// sign-out button, whose form needs the session's CSRF token.
pub struct Nav<'a> {
    pub username: &'a str,
    pub csrf_token: &'a str,
    /// Whether to link to the local inbox: only where emails go there.
    pub inbox: bool,
}

#[derive(Template)]
#[template(path = "admin/login.html")]
pub struct LoginPage<'a> {
    pub newsletter: &'a Newsletter,
    pub username: &'a str,
    /// Why the last attempt failed, or why signing in is impossible now.
    pub error: Option<&'a str>,
    /// A note for someone sent here on purpose (signed out, password changed).
    pub notice: Option<&'a str>,
    /// Tied to the pre-session cookie set with the page.
    pub csrf_token: &'a str,
}

#[derive(Template)]
#[template(path = "admin/login_code.html")]
pub struct CodePage<'a> {
    pub newsletter: &'a Newsletter,
    pub csrf_token: &'a str,
    pub error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "admin/password.html")]
pub struct PasswordPage<'a> {
    pub newsletter: &'a Newsletter,
    pub nav: Nav<'a>,
    pub error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "admin/totp.html")]
pub struct TotpPage<'a> {
    pub newsletter: &'a Newsletter,
    pub nav: Nav<'a>,
    pub already_enabled: bool,
    /// The QR code, an `<svg>` element drawn here from the secret.
    pub qr_svg: &'a str,
    pub secret: &'a str,
    pub error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "admin/recovery_codes.html")]
pub struct RecoveryCodesPage<'a> {
    pub newsletter: &'a Newsletter,
    pub nav: Nav<'a>,
    pub codes: &'a [String],
}
