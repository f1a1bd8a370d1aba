//! `GET /`: the subscribe page, and `GET /style.css`, its only asset.

use actix_web::http::StatusCode;
use actix_web::http::header::{CacheControl, CacheDirective, ContentType};
use actix_web::{HttpResponse, mime, web};

use crate::db::Db;
use crate::domain::Newsletter;
use crate::pages::{STYLESHEET, SubscribePage, page};
use crate::routes::public::sign_up::offered_lists;

#[utoipa::path(get, path = "/", tag = "public",
    responses((status = 200, description = "The subscribe page.", body = String, content_type = "text/html")))]
pub async fn home(newsletter: web::Data<Newsletter>, db: web::Data<Db>) -> HttpResponse {
    let lists = offered_lists(&db).await;
    page(StatusCode::OK, &SubscribePage::empty(&newsletter, lists))
}

#[utoipa::path(get, path = "/style.css", tag = "public",
    responses((status = 200, description = "The pages' stylesheet.", body = String, content_type = "text/css")))]
pub async fn stylesheet() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType(mime::TEXT_CSS_UTF_8))
        .insert_header(CacheControl(vec![
            CacheDirective::Public,
            CacheDirective::MaxAge(3600),
        ]))
        .body(STYLESHEET)
}
