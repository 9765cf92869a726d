//! Rebuild when a migration or an explorer template changes (`sqlx::migrate!` and askama embed
//! them at compile time).
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
    println!("cargo:rerun-if-changed=src/explorer/templates");
    println!("cargo:rerun-if-changed=src/explorer/explorer.css");
}
