use actix_web::HttpResponse;

/// Liveness: answers as long as the process serves HTTP. It deliberately does
/// not touch Postgres, so a database outage does not get healthy replicas
/// restarted.
#[utoipa::path(get, path = "/health_check", tag = "public",
    responses((status = 200, description = "The process serves HTTP (liveness).")))]
pub async fn health_check() -> HttpResponse {
    HttpResponse::Ok().finish()
}
