// The migrations are embedded by `sqlx::migrate!`; rebuild when one is added
// or changed, which cargo does not notice on its own.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
