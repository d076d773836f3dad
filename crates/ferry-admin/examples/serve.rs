//! Serve the management API alone on an in-memory SQLite store, for trying it out and for quick runs of
//! `scripts/schemathesis/run.sh`: prints `URL KEY` on stdout, then serves until killed.
//!
//! `cargo run -p ferry-admin --example serve [ADDR]` (default 127.0.0.1:0).

use std::io::Write as _;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let store: Arc<dyn ferry_store::Store> =
        Arc::new(ferry_store::SqliteStore::open_in_memory().await?);
    let key = ferry_admin::Admin::new(store.clone())
        .create_admin_key(&ferry_admin::model::AdminKeyCreate {
            name: "example".into(),
            ..Default::default()
        })
        .await?
        .key;
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("http://{} {key}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let router = ferry_admin::AdminApi::new(store).router();
    ferry_admin::serve(listener, router, std::future::pending()).await?;
    Ok(())
}
