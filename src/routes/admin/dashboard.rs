//! `GET /admin/dashboard`: the list at a glance, the last 30 days of
//! sign-ups and confirmations, the outbox, the admin's account, the failed
//! sign-ins of the last day and the latest entries of the audit log.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use chrono::{Duration, NaiveDate, Utc};
use sqlx::PgConnection;

use crate::admin::guard::SignedIn;
use crate::admin::pages::layout::nav;
use crate::admin::{accounts, audit, sign_in_failures};
use crate::db::Db;
use crate::pages::page;
use crate::routes::admin::pages::{Chart, DashboardPage, Day, status_label};
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
    let (figures, audit, sign_in_failures, unused_recovery_codes) = db
        .transaction(async |tx| {
            let figures = Figures::read(tx).await?;
            let audit = audit::latest(tx, AUDIT_ENTRIES).await?;
            let failures = sign_in_failures::last_day(tx).await?;
            let unused = accounts::unused_recovery_codes(tx, admin.admin.id).await?;
            Ok((figures, audit, failures, unused))
        })
        .await
        .step("read the dashboard")?;
    let sign_ups_30_days = figures.days.iter().map(|d| d.sign_ups).sum();
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
            chart: Chart::new(figures.days),
            outbox_queued: figures.outbox_queued,
            outbox_failed: figures.outbox_failed,
            audit,
            sign_in_failures,
            email_error: refused.map(|r| r.reason),
        },
    ))
}

struct Figures {
    by_status: Vec<(String, i64)>,
    days: Vec<Day>,
    /// People who signed up in the chart's days, and how many of them have
    /// confirmed since.
    recent_sign_ups: i64,
    recent_confirmed: i64,
    outbox_queued: i64,
    outbox_failed: i64,
}

impl Figures {
    async fn read(connection: &mut PgConnection) -> Result<Self, sqlx::Error> {
        let by_status: Vec<(String, i64)> = sqlx::query_as(
            "SELECT status, count(*) FROM subscriptions GROUP BY status ORDER BY status",
        )
        .fetch_all(&mut *connection)
        .await?;
        let first_day = Utc::now().date_naive() - Duration::days(DAYS - 1);
        // Days in UTC. Both counts read through the indexes on
        // subscribed_at and confirmed_at, whatever the size of the list.
        let per_day: Vec<(NaiveDate, i64, i64)> = sqlx::query_as(
            "WITH days AS ( \
                 SELECT generate_series($1::date, (now() AT TIME ZONE 'UTC')::date, '1 day')::date AS day \
             ), sign_ups AS ( \
                 SELECT (subscribed_at AT TIME ZONE 'UTC')::date AS day, count(*) AS n \
                 FROM subscriptions WHERE subscribed_at >= $1::date::timestamp AT TIME ZONE 'UTC' \
                 GROUP BY 1 \
             ), confirmations AS ( \
                 SELECT (confirmed_at AT TIME ZONE 'UTC')::date AS day, count(*) AS n \
                 FROM subscriptions WHERE confirmed_at >= $1::date::timestamp AT TIME ZONE 'UTC' \
                 GROUP BY 1 \
             ) \
             SELECT days.day, coalesce(sign_ups.n, 0), coalesce(confirmations.n, 0) \
             FROM days \
             LEFT JOIN sign_ups USING (day) \
             LEFT JOIN confirmations USING (day) \
             ORDER BY days.day",
        )
        .bind(first_day)
        .fetch_all(&mut *connection)
        .await?;
        let (recent_sign_ups, recent_confirmed): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE status = 'confirmed') \
             FROM subscriptions WHERE subscribed_at >= $1::date::timestamp AT TIME ZONE 'UTC'",
        )
        .bind(first_day)
        .fetch_one(&mut *connection)
        .await?;
        // The failed count reads every failed row; the queued one uses the
        // index of due messages.
        let (outbox_queued, outbox_failed): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM email_outbox WHERE status = 'pending'), \
                    (SELECT count(*) FROM email_outbox WHERE status = 'failed')",
        )
        .fetch_one(&mut *connection)
        .await?;
        let days = per_day
            .into_iter()
            .map(|(day, sign_ups, confirmations)| Day {
                label: day.format("%b %-d").to_string(),
                sign_ups,
                confirmations,
            })
            .collect();
        Ok(Self {
            by_status,
            days,
            recent_sign_ups,
            recent_confirmed,
            outbox_queued,
            outbox_failed,
        })
    }
}
