//! `GET /admin/dashboard`: the list at a glance, the last 30 days of
//! sign-ups and confirmations, the outbox, the admin's account, the failed
//! sign-ins of the last day and the latest entries of the audit log.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};

use crate::admin::guard::SignedIn;
use crate::admin::pages::layout::nav;
use crate::admin::{accounts, audit, sign_in_failures};
use crate::db::Db;
use crate::outbox;
use crate::outgoing_webhooks::endpoints;
use crate::pages::page;
use crate::routes::admin::pages::{Chart, DashboardPage, Day, status_label};
use crate::subscribers::figures;
use crate::web::error::{ApiError, DatabaseStep};

/// Audit entries the dashboard shows.
const AUDIT_ENTRIES: i64 = 20;

/// Days in the chart, today included.
const DAYS: i64 = 30;

#[utoipa::path(get, path = "/admin/dashboard", tag = "admin",
    responses((status = 200, description = "The dashboard.", body = String, content_type = "text/html"), crate::web::openapi_responses::AdminOnly))]
pub async fn dashboard(admin: SignedIn, db: web::Data<Db>) -> Result<HttpResponse, ApiError> {
    render_dashboard(&db, &admin, StatusCode::OK, None).await
}

/// An address the admin typed and the reason it was refused.
pub struct RefusedEmail<'a> {
    pub typed: &'a str,
    pub reason: String,
}

/// The dashboard; after a refused address, with what was typed in the field
/// and the reason next to it.
pub async fn render_dashboard(
    db: &Db,
    admin: &SignedIn,
    status: StatusCode,
    refused: Option<RefusedEmail<'_>>,
) -> Result<HttpResponse, ApiError> {
    let (figures, outbox, audit, sign_in_failures, unused_recovery_codes, disabled) = db
        .transaction(async |tx| {
            let figures = figures::read(tx, DAYS).await?;
            let outbox = outbox::store::queue_counts(tx).await?;
            let disabled = endpoints::disabled_for_failing(tx).await?;
            let audit = audit::latest(tx, AUDIT_ENTRIES).await?;
            let failures = sign_in_failures::last_day(tx).await?;
            let unused = accounts::unused_recovery_codes(tx, admin.admin.id).await?;
            Ok((figures, outbox, audit, failures, unused, disabled))
        })
        .await
        .step("read the dashboard")?;
    let sign_ups_30_days = figures.days.iter().map(|d| d.sign_ups).sum();
    let days = figures
        .days
        .iter()
        .map(|d| Day {
            label: d.day.format("%b %-d").to_string(),
            sign_ups: d.sign_ups,
            confirmations: d.confirmations,
        })
        .collect();
    let confirmation_rate = (figures.recent_sign_ups > 0).then(|| {
        (figures.recent_confirmed * 100 + figures.recent_sign_ups / 2) / figures.recent_sign_ups
    });
    Ok(page(
        status,
        &DashboardPage {
            newsletter: &admin.newsletter,
            nav: nav(admin),
            email: refused
                .as_ref()
                .map(|r| r.typed)
                .or(admin.admin.email.as_deref())
                .unwrap_or_default(),
            totp_enabled: admin.admin.totp_secret.is_some(),
            unused_recovery_codes,
            total: figures.by_status.iter().map(|(_, n)| n).sum(),
            by_status: figures
                .by_status
                .into_iter()
                .map(|(status, n)| {
                    let label = status_label(&status);
                    (status, label, n)
                })
                .collect(),
            sign_ups_30_days,
            confirmation_rate,
            chart: Chart::new(days),
            outbox_queued: outbox.queued,
            outbox_failed: outbox.failed,
            disabled_webhooks: disabled
                .into_iter()
                .map(|e| (e.id, e.url, e.disabled_reason.unwrap_or_default()))
                .collect(),
            audit,
            sign_in_failures,
            email_error: refused.map(|r| r.reason),
        },
    ))
}
