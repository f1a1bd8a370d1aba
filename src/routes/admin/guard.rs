//! Who is asking: the check in front of every `/admin` route, the
//! [`SignedIn`] admin it leaves for handlers, and [`Protected`] forms.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, CacheControl, CacheDirective, ContentType};
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, web};
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

use crate::admin::accounts::{self, Admin};
use crate::admin::sessions::{Session, SessionData, SessionError, SessionStore, Stage};
use crate::db::Db;
use crate::domain::Newsletter;
use crate::pages::wants_html;
use crate::routes::admin::SessionCookies;
use crate::routes::error::{ApiError, DatabaseStep};

/// The admin a request under `/admin` was made by, and the session it came
/// with. Handlers take it as an argument; only the guard creates it.
#[derive(Clone)]
pub struct SignedIn(Rc<SignedInAdmin>);

pub struct SignedInAdmin {
    pub admin: Admin,
    pub session: Session,
    /// For the pages' header.
    pub newsletter: web::Data<Newsletter>,
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
    let signed_in = authenticate(request.request()).await?;
    let Some(signed_in) = signed_in else {
        let answer = sign_in_first(request.request());
        return Ok(request.into_response(answer).map_into_right_body());
    };
    request
        .extensions_mut()
        .insert(SignedIn(Rc::new(signed_in)));
    let mut response = next.call(request).await?;
    no_store(response.headers_mut());
    Ok(response.map_into_left_body())
}

/// Admin pages hold subscriber data: no cache, shared or private, keeps a
/// copy that outlives the session.
pub fn no_store(headers: &mut header::HeaderMap) {
    let value = CacheControl(vec![CacheDirective::NoStore]);
    headers.insert(
        header::CACHE_CONTROL,
        header::TryIntoHeaderValue::try_into_value(value).expect("a valid header"),
    );
}

async fn authenticate(request: &HttpRequest) -> Result<Option<SignedInAdmin>, ApiError> {
    let cookies = request
        .app_data::<web::Data<SessionCookies>>()
        .expect("the session cookies are registered as app data");
    let Some(id) = cookies.session_id(request) else {
        return Ok(None);
    };
    let store = session_store(request);
    let Some(session) = store.load(&id).await.map_err(sessions_unavailable)? else {
        return Ok(None);
    };
    if session.data.stage != Stage::SignedIn {
        return Ok(None);
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
            Ok(Some(SignedInAdmin {
                admin,
                session,
                newsletter,
            }))
        }
        _ => {
            store
                .destroy(&session.id)
                .await
                .map_err(sessions_unavailable)?;
            Ok(None)
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

/// A browser is sent to the sign-in page; other clients are told to sign in.
fn sign_in_first(request: &HttpRequest) -> HttpResponse {
    let mut answer = if wants_html(request) {
        HttpResponse::SeeOther()
            .insert_header((header::LOCATION, "/login"))
            .finish()
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

/// Whether `token` is the session's CSRF token, compared in constant time.
pub fn csrf_matches(session: &SessionData, token: Option<&str>) -> bool {
    token.is_some_and(|token| bool::from(token.as_bytes().ct_eq(session.csrf_token.as_bytes())))
}

/// The CSRF answer: 403, whatever else is wrong with the form.
pub fn csrf_refused() -> ApiError {
    ApiError::Forbidden(
        "This form has expired or did not come from this site. Go back, reload the page \
         and try again."
            .into(),
    )
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
            let token = fields
                .iter()
                .find(|(name, _)| name == "csrf_token")
                .map(|(_, value)| value.as_str());
            if !csrf_matches(&admin.session.data, token) {
                return Err(csrf_refused().into());
            }
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
