//! Domain types: the values the service works with, each of which can only be
//! built through a parse function. Code that holds one of these never has to
//! check it again. This module depends on nothing else in the crate.

mod consent_source;
mod list_details;
mod mentions;
mod new_subscriber;
mod newsletter;
mod slug;
mod subscriber_email;
mod subscriber_name;
mod subscription_token;
mod unwanted_characters;
mod web_address;

pub use consent_source::ConsentSource;
pub use list_details::{ListDescription, ListName};
pub use mentions::{ERASED, Mentions};
pub use new_subscriber::NewSubscriber;
pub use newsletter::{Newsletter, NewsletterError, NewsletterPart};
pub use slug::Slug;
pub use subscriber_email::{Mailbox, SubscriberEmail};
pub use subscriber_name::SubscriberName;
pub use subscription_token::SubscriptionToken;
pub(crate) use unwanted_characters::UnwantedCharacter;
