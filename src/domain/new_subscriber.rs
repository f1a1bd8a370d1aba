use uuid::Uuid;

use crate::domain::{SubscriberEmail, SubscriberName};

/// A subscription request that passed every check at the edge.
#[derive(Debug, Clone)]
pub struct NewSubscriber {
    pub email: SubscriberEmail,
    pub name: SubscriberName,
    /// The lists asked for, each named once; none means the default list.
    pub lists: Vec<Uuid>,
}
