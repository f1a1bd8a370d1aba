//! `/preferences/{token}`: a reader's own page of lists, from the link in
//! every issue. No sign-in: the token of the link (the one that
//! unsubscribes, [`Keys::unsubscribe_token`]) says whose page it is.
//!
//! `GET` only shows the page: link scanners open every link, and opening
//! one must change nothing. The form `POST`s the lists chosen with a token
//! of its own ([`Keys::preferences_form_token`]), so saving takes the page
//! first: a `POST` made from the link alone is refused. The link is the
//! credential, as the unsubscribe link is: whoever holds it can change the
//! reader's lists, as they can unsubscribe them. Joining a
//! list from here needs no confirmation email: the link went to the
//! reader's address, which is what a confirmation proves. Leaving the last
//! list is leaving everything, as the unsubscribe link does; so is the
//! page's "Unsubscribe from everything", which posts to that link. A list
//! joined here is a confirmation on it: its welcome email, if it has one,
//! is queued in the same transaction ([`crate::subscribers::welcome::queue_for`]).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, dev::HttpServiceFactory, web};
use uuid::Uuid;

use super::unsubscribe::{masked, not_on_the_list, personal, refuse};
use crate::db::Db;
use crate::domain::Newsletter;
use crate::keys::{Keys, Unsubscriber};
use crate::pages::{ListChoice, PreferencesPage, PreferencesState, page, wants_html};
use crate::subscribers::memberships::{self, Choice};
use crate::subscribers::welcome::Welcomer;
use crate::subscribers::{self, history, record};
use crate::web::error::{ApiError, DatabaseStep};

/// Most lists one save may name.
const MAX_LISTS: usize = 200;

/// The resource at `path`: never cached nor indexed, like every answer to
/// a per-person link.
pub fn resource(path: &str) -> impl HttpServiceFactory + 'static {
    web::resource(path).wrap(personal()).get(show).post(save)
}

/// What the page is for, once the token is read.
enum Reader {
    TestSend,
    Subscriber(Uuid),
}

fn reader(keys: &Keys, token: &str) -> Result<Reader, crate::keys::BadToken> {
    Ok(match keys.verify_unsubscribe_token(token)? {
        Unsubscriber::Subscriber(id) => Reader::Subscriber(id),
        Unsubscriber::TestSend => Reader::TestSend,
    })
}

#[utoipa::path(get, path = "/preferences/{token}", tag = "public",
    params(("token" = String, Path, description = "The signed token from the link in an issue.")),
    responses(
        (status = 200, description = "The reader's lists, with a form to change them; or that the address is not on any list; or, for a test email's link, what a reader would see. Nothing changes.", body = String, content_type = "text/html"),
        (status = 400, description = "A token this service did not sign.", content((String = "text/html"), (String = "text/plain"))),
        (status = 404, description = "No such route: a path parameter left empty.", body = String, content_type = "text/plain"),
        crate::web::openapi_responses::Unavailable,
    ))]
#[tracing::instrument(name = "Open the page of lists", skip_all)]
pub async fn show(
    request: HttpRequest,
    token: web::Path<String>,
    keys: web::Data<Keys>,
    db: web::Data<Db>,
    newsletter: web::Data<Newsletter>,
) -> Result<HttpResponse, ApiError> {
    let subscriber_id = match reader(&keys, &token) {
        Ok(Reader::Subscriber(id)) => id,
        Ok(Reader::TestSend) => return Ok(test_send_page(&db, &newsletter, &token).await),
        Err(bad) => return refuse(bad, wants_html(&request), &newsletter),
    };
    render(&db, &keys, &newsletter, &token, subscriber_id, None).await
}

/// The page for `subscriber_id` as the database has it now.
async fn render(
    db: &Db,
    keys: &Keys,
    newsletter: &Newsletter,
    token: &str,
    subscriber_id: Uuid,
    notice: Option<&str>,
) -> Result<HttpResponse, ApiError> {
    let found = db
        .transaction(async |tx| {
            let Some(subscriber) = record::find(tx, subscriber_id).await? else {
                return Ok(None);
            };
            let choices = memberships::choices(tx, subscriber_id).await?;
            Ok(Some((subscriber, choices)))
        })
        .await
        .step("read the reader's lists")?;
    let Some((subscriber, choices)) = found else {
        return Ok(not_on_the_list(true, newsletter));
    };
    let state = match subscriber.status.as_str() {
        "confirmed" => PreferencesState::Choosing {
            choices: checkboxes(choices),
            form_token: keys.preferences_form_token(subscriber_id),
        },
        "unsubscribed" => PreferencesState::Left,
        _ => PreferencesState::Unconfirmed,
    };
    Ok(page(
        StatusCode::OK,
        &PreferencesPage {
            newsletter,
            token,
            address: masked(&subscriber.email),
            state,
            notice,
        },
    ))
}

/// The page a test email's link opens: the lists a reader would choose
/// from, as a new reader sees them, and no form that saves.
async fn test_send_page(db: &Db, newsletter: &Newsletter, token: &str) -> HttpResponse {
    let _ = db;
    page(
        StatusCode::OK,
        &PreferencesPage {
            newsletter,
            token,
            address: None,
            state: PreferencesState::TestSend,
            notice: None,
        },
    )
}

fn checkboxes(choices: Vec<Choice>) -> Vec<ListChoice> {
    choices
        .into_iter()
        .filter(|choice| choice.open || choice.is_on())
        .map(|choice| ListChoice {
            id: choice.list_id.to_string(),
            checked: choice.is_on(),
            name: choice.name,
            description: choice.description,
        })
        .collect()
}

/// The form as sent: `list` once per list ticked, and the form's token.
struct Chosen {
    lists: Vec<Uuid>,
    form_token: Option<String>,
}

impl Chosen {
    fn from_pairs(pairs: Vec<(String, String)>) -> Result<Self, String> {
        let mut chosen = Chosen {
            lists: Vec::new(),
            form_token: None,
        };
        for (key, value) in pairs {
            match key.as_str() {
                "list" => {
                    let id = Uuid::try_parse(value.trim())
                        .map_err(|_| "One of the lists chosen does not exist.".to_owned())?;
                    if !chosen.lists.contains(&id) {
                        chosen.lists.push(id);
                    }
                }
                "form_token" => chosen.form_token = Some(value),
                _ => {}
            }
        }
        if chosen.lists.len() > MAX_LISTS {
            return Err(format!("At most {MAX_LISTS} lists can be chosen at once."));
        }
        Ok(chosen)
    }
}

/// What a save came to.
enum Saved {
    Gone,
    /// Not a confirmed reader (unconfirmed, or left everything): nothing
    /// to save from this form.
    NotChoosing,
    Lists,
    /// They left their last list: unsubscribed from everything.
    LeftEverything,
}

#[utoipa::path(post, path = "/preferences/{token}", tag = "public",
    params(("token" = String, Path, description = "The signed token from the link in an issue.")),
    request_body(content = String, description = "`list` once for each list chosen (its id), and `form_token` from the page.", content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Saved: the page again, saying what changed; or that the address is not on any list; or, for a test email's link, that nothing changed.", body = String, content_type = "text/html"),
        (status = 400, description = "A token this service did not sign, or a list id that cannot be read.", content((String = "text/html"), (String = "text/plain"))),
        (status = 403, description = "The form's token is missing or is not this page's.", body = String, content_type = "text/plain"),
        (status = 404, description = "No such route: a path parameter left empty.", body = String, content_type = "text/plain"),
        crate::web::openapi_responses::FormRefusals,
        crate::web::openapi_responses::Unavailable,
    ))]
#[tracing::instrument(name = "Save the reader's lists", skip_all, fields(subscriber_id = tracing::field::Empty))]
pub async fn save(
    request: HttpRequest,
    token: web::Path<String>,
    form: web::Form<Vec<(String, String)>>,
    keys: web::Data<Keys>,
    db: web::Data<Db>,
    newsletter: web::Data<Newsletter>,
    welcomer: web::Data<Welcomer>,
) -> Result<HttpResponse, ApiError> {
    let subscriber_id = match reader(&keys, &token) {
        Ok(Reader::Subscriber(id)) => id,
        Ok(Reader::TestSend) => return Ok(test_send_page(&db, &newsletter, &token).await),
        Err(bad) => return refuse(bad, wants_html(&request), &newsletter),
    };
    tracing::Span::current().record("subscriber_id", tracing::field::display(subscriber_id));
    let chosen = Chosen::from_pairs(form.into_inner()).map_err(ApiError::BadRequest)?;
    let from_the_page = chosen
        .form_token
        .as_deref()
        .is_some_and(|raw| keys.verify_preferences_form_token(subscriber_id, raw));
    if !from_the_page {
        return Err(ApiError::Forbidden(
            "This form did not come from your page of lists: open the link in the email again."
                .into(),
        ));
    }
    let saved = db
        .transaction(async |tx| {
            // The tokens before the subscriber, as a confirmation and an
            // unsubscribe take them, so that none of them deadlocks.
            record::lock_tokens(tx, subscriber_id).await?;
            let Some(subscriber) = record::lock(tx, subscriber_id).await? else {
                return Ok(Saved::Gone);
            };
            if subscriber.status != "confirmed" {
                return Ok(Saved::NotChoosing);
            }
            let chose = memberships::choose(tx, subscriber_id, &chosen.lists).await?;
            let joined: Vec<_> = chose
                .joined
                .iter()
                .map(|&list| (subscriber_id, list))
                .collect();
            welcomer.queue_for(tx, &joined).await?;
            if chose.on > 0 {
                return Ok(Saved::Lists);
            }
            if let Some(address) = subscribers::unsubscribe(tx, subscriber_id).await? {
                history::remember_departure(tx, &keys, &address).await?;
            }
            Ok(Saved::LeftEverything)
        })
        .await
        .step("save the reader's lists")?;
    let notice = match saved {
        Saved::Gone => return Ok(not_on_the_list(true, &newsletter)),
        Saved::NotChoosing => None,
        Saved::Lists => Some("Your lists are saved."),
        Saved::LeftEverything => {
            Some("You left your last list: you will not receive another issue.")
        }
    };
    render(&db, &keys, &newsletter, &token, subscriber_id, notice).await
}
