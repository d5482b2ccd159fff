//! What every HTTP handler and dashboard page shares: a leaf beneath the
//! API, the dashboard and the server that mounts them both.

use std::sync::Arc;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::watch::Tally;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    /// This replica's count of Stripe deliveries, for the watcher.
    pub tally: Arc<Tally>,
}

impl AppState {
    /// The client's address, as the audit log and the sign-in lock-out go
    /// by it: the peer's, or the one a trusted proxy names
    /// ([`crate::access::client::client_address`]).
    pub fn client_of(
        &self,
        peer: std::net::IpAddr,
        headers: &axum::http::HeaderMap,
    ) -> std::net::IpAddr {
        let forwarded: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        crate::access::client::client_address(peer, &forwarded, &self.config.trusted_proxies)
    }

    /// [`AppState::client_of`] for a request's parts, as text; none when
    /// the server was not told peers' addresses.
    pub fn client_of_request(&self, parts: &axum::http::request::Parts) -> Option<String> {
        parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|peer| self.client_of(peer.0.ip(), &parts.headers).to_string())
    }
}
