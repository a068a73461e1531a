//! Rebuilds the crate when a migration changes: `sqlx::migrate!` embeds `migrations/` at
//! compile time, and cargo does not track those files on its own.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
