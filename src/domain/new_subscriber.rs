use crate::domain::{SubscriberEmail, SubscriberName};

/// A subscription request that passed every check at the edge.
#[derive(Debug, Clone)]
pub struct NewSubscriber {
    pub email: SubscriberEmail,
    pub name: SubscriberName,
}
