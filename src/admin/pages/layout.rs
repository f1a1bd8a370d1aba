//! The frame every newsroom page shares: the navigation bar with the
//! signed-in admin's name, the sign-out form (which needs the session's
//! CSRF token) and the inbox link when the local inbox is on. Each page
//! handler builds it here from the [`SignedIn`] admin the guard left.

use crate::admin::guard::SignedIn;
use crate::admin::pages::templates::Nav;

/// The navigation bar for the admin behind this request.
pub fn nav(admin: &SignedIn) -> Nav<'_> {
    Nav {
        username: &admin.admin.username,
        csrf_token: &admin.session.data.csrf_token,
        inbox: admin.inbox,
    }
}
