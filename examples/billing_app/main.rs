//! `cargo run --example billing_app`: a small billing app wired to Assay.
//!
//! Settings (environment): `APP_BIND` (default 127.0.0.1:3000),
//! `APP_DATABASE_URL` (default sqlite://billing_app.db),
//! `STRIPE_WEBHOOK_SECRET`, `APP_PLAN_MAP` (`price_or_lookup_key=plan,...`),
//! `ASSAY_URL` (default http://127.0.0.1:8080), `ASSAY_API_KEY`, `GIT_SHA`.
//! Point Stripe (or `stripe listen`) at `/stripe/webhook`, and Assay's
//! `ASSAY_PROBE_URL` at `http://127.0.0.1:3000/internal/access/{{customer_id}}`.

mod app;

fn var(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let plans = var("APP_PLAN_MAP", "")
        .split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let settings = app::Settings {
        stripe_webhook_secret: var("STRIPE_WEBHOOK_SECRET", ""),
        plans,
        assay_url: var("ASSAY_URL", "http://127.0.0.1:8080"),
        assay_api_key: var("ASSAY_API_KEY", ""),
        deploy_sha: var("GIT_SHA", "dev"),
        break_reconciliation: false,
    };
    let router = app::router(
        settings,
        &var("APP_DATABASE_URL", "sqlite://billing_app.db"),
    )
    .await?;
    let listener = tokio::net::TcpListener::bind(var("APP_BIND", "127.0.0.1:3000")).await?;
    println!("billing app on http://{}", listener.local_addr()?);
    axum::serve(listener, router).await?;
    Ok(())
}
