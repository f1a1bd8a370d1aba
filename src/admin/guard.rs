//! Who is asking: the check in front of every `/admin` route, the
//! [`SignedIn`] admin it leaves for handlers, and [`Protected`] forms.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, ContentType};
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, web};
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

use crate::admin::accounts::{self, Admin};
use crate::admin::cookies::SessionCookies;
use crate::admin::pages::sign_in_page::sign_in_page;
use crate::admin::sessions::{Session, SessionData, SessionError, SessionStore, Stage};
use crate::db::Db;
use crate::delivery::inbox::LocalInbox;
use crate::domain::Newsletter;
use crate::pages::wants_html;
use crate::web::answers::{no_store, with_retry_after};
use crate::web::error::{ApiError, DatabaseStep};
use actix_web::http::StatusCode;

/// The admin a request under `/admin` was made by, and the session it came
/// with. Handlers take it as an argument; only the guard creates it.
#[derive(Clone)]
pub struct SignedIn(Rc<SignedInAdmin>);

pub struct SignedInAdmin {
    pub admin: Admin,
    pub session: Session,
    /// For the pages' header.
    pub newsletter: web::Data<Newsletter>,
    /// Whether the navigation links to the local inbox.
    pub inbox: bool,
}

impl std::ops::Deref for SignedIn {
    type Target = SignedInAdmin;

    fn deref(&self) -> &SignedInAdmin {
        &self.0
    }
}

/// Lets through a request whose session is signed in, for an admin that
/// still exists and has not changed their password since. Anyone else is
/// sent to `/login` (a browser) or answered 401 (any other client); when
/// Redis or Postgres cannot tell, 503.
pub async fn require_admin(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let signed_in = match authenticate(request.request()).await {
        Ok(signed_in) => signed_in,
        Err(e @ ApiError::SessionsUnavailable(_)) if wants_html(request.request()) => {
            // The error is logged like any other; the person gets a page.
            tracing::error!(error = ?e, "Admin page refused: sessions cannot be checked");
            let answer = unavailable_page(request.request());
            return Ok(request.into_response(answer).map_into_right_body());
        }
        // An answer rather than an error, so that it gets the headers every
        // answer gets.
        Err(e) => {
            let answer = HttpResponse::from_error(actix_web::Error::from(e));
            return Ok(request.into_response(answer).map_into_right_body());
        }
    };
    let signed_in = match signed_in {
        Visitor::SignedIn(signed_in) => signed_in,
        Visitor::Anonymous { forget_cookie } => {
            let answer = sign_in_first(request.request(), forget_cookie);
            return Ok(request.into_response(answer).map_into_right_body());
        }
    };
    request.extensions_mut().insert(signed_in);
    let mut response = next.call(request).await?;
    no_store(response.headers_mut());
    Ok(response.map_into_left_body())
}

/// Who is asking, as far as the guard can tell.
enum Visitor {
    SignedIn(SignedIn),
    /// Not signed in. `forget_cookie` when the browser holds a cookie that
    /// names no session worth keeping (unknown, expired, ended); a sign-in
    /// waiting for its code keeps its cookie.
    Anonymous {
        forget_cookie: bool,
    },
}

async fn authenticate(request: &HttpRequest) -> Result<Visitor, ApiError> {
    let cookies = request
        .app_data::<web::Data<SessionCookies>>()
        .expect("the session cookies are registered as app data");
    let stale = Visitor::Anonymous {
        forget_cookie: request.cookie(cookies.session_name()).is_some(),
    };
    let Some(id) = cookies.session_id(request) else {
        return Ok(stale);
    };
    let store = session_store(request);
    let Some(session) = store.load(&id).await.map_err(sessions_unavailable)? else {
        return Ok(stale);
    };
    if session.data.stage != Stage::SignedIn {
        return Ok(Visitor::Anonymous {
            forget_cookie: false,
        });
    }
    let db = request
        .app_data::<web::Data<Db>>()
        .expect("the database is registered as app data");
    let admin = db
        .transaction(async |tx| accounts::find(tx, session.data.admin_id).await)
        .await
        .step("check the admin's account")?;
    match admin {
        // A password change (here or from the command line) raised the
        // generation: sessions made before it end, on every replica.
        Some(admin) if admin.session_generation == session.data.generation => {
            let newsletter = request
                .app_data::<web::Data<Newsletter>>()
                .expect("the newsletter is registered as app data")
                .clone();
            let inbox = request
                .app_data::<web::Data<LocalInbox>>()
                .expect("the local inbox's state is registered as app data")
                .is_on();
            Ok(Visitor::SignedIn(SignedIn(Rc::new(SignedInAdmin {
                admin,
                session,
                newsletter,
                inbox,
            }))))
        }
        _ => {
            store
                .destroy(&session.id)
                .await
                .map_err(sessions_unavailable)?;
            Ok(stale)
        }
    }
}

pub fn session_store(request: &HttpRequest) -> &SessionStore {
    request
        .app_data::<web::Data<SessionStore>>()
        .expect("the session store is registered as app data")
}

pub fn sessions_unavailable(e: SessionError) -> ApiError {
    ApiError::SessionsUnavailable(anyhow::Error::new(e))
}

/// A browser is sent to the sign-in page, and a cookie it came with that
/// names no good session is removed; other clients are told to sign in.
fn sign_in_first(request: &HttpRequest, forget_cookie: bool) -> HttpResponse {
    let mut answer = if wants_html(request) {
        let mut answer = HttpResponse::SeeOther()
            .insert_header((header::LOCATION, "/login"))
            .finish();
        let cookies = request
            .app_data::<web::Data<SessionCookies>>()
            .expect("the session cookies are registered as app data");
        if forget_cookie {
            // Removing a cookie cannot fail for a well-formed one like ours.
            let _ = answer.add_cookie(&cookies.no_session());
        }
        answer
    } else {
        HttpResponse::Unauthorized()
            .content_type(ContentType::plaintext())
            .body("Sign in first: this page is for the newsletter's admins.")
    };
    no_store(answer.headers_mut());
    answer
}

impl FromRequest for SignedIn {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        // Only reachable without the guard through a routing mistake, which
        // must fail closed.
        std::future::ready(
            request
                .extensions()
                .get::<SignedIn>()
                .cloned()
                .ok_or_else(|| ApiError::Unauthorized("Sign in first.".into())),
        )
    }
}

/// Accepts a form's fields only when their `csrf_token` is the session's,
/// compared in constant time; 403 otherwise, whatever else is wrong with the
/// form.
pub fn check_csrf(session: &SessionData, fields: &[(String, String)]) -> Result<(), ApiError> {
    let token = fields
        .iter()
        .find(|(name, _)| name == "csrf_token")
        .map(|(_, value)| value.as_bytes());
    match token {
        Some(token) if bool::from(token.ct_eq(session.csrf_token.as_bytes())) => Ok(()),
        _ => Err(ApiError::Forbidden(
            "This form has expired or did not come from this site. Go back, reload the page \
             and try again."
                .into(),
        )),
    }
}

/// The sign-in page saying why nobody can sign in now, for a browser that
/// asked for an admin page while Redis is unreachable.
fn unavailable_page(request: &HttpRequest) -> HttpResponse {
    let newsletter = request
        .app_data::<web::Data<Newsletter>>()
        .expect("the newsletter is registered as app data");
    let cookies = request
        .app_data::<web::Data<SessionCookies>>()
        .expect("the session cookies are registered as app data");
    let error = "Admin pages are unavailable right now. Please try again in a few minutes.";
    let page = sign_in_page(
        StatusCode::SERVICE_UNAVAILABLE,
        cookies,
        newsletter,
        "",
        Some(error),
        None,
    );
    with_retry_after(page, std::time::Duration::from_secs(30))
}

/// A form posted by the signed-in admin, accepted only with the session's
/// CSRF token in its `csrf_token` field (`T` need not declare it). The token is checked before anything else about the form, so
/// a forged request learns nothing from the answer but 403.
pub struct Protected<T> {
    pub admin: SignedIn,
    pub form: T,
}

impl<T: DeserializeOwned + 'static> FromRequest for Protected<T> {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, actix_web::Error>>>>;

    fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let admin = SignedIn::extract(request).into_inner();
        let body = web::Form::<Vec<(String, String)>>::from_request(request, payload);
        Box::pin(async move {
            let admin = admin?;
            // Read as pairs first: a form whose other fields are wrong
            // still gets its token checked first.
            let fields = body.await?.into_inner();
            check_csrf(&admin.session.data, &fields)?;
            let form = parse_fields(&fields)?;
            Ok(Protected { admin, form })
        })
    }
}

/// The fields of an already-read form, as `T`.
pub fn parse_fields<T: DeserializeOwned>(fields: &[(String, String)]) -> Result<T, ApiError> {
    let encoded = serde_urlencoded::to_string(fields)
        .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e)))?;
    serde_urlencoded::from_str(&encoded)
        .map_err(|e| ApiError::BadRequest(format!("The form could not be read: {e}.")))
}
