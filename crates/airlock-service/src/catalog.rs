//! Remote service catalog (`[server] catalog_url`): fetched at start-up and
//! every `catalog_refresh`. The last good copy is kept in memory and in the
//! data dir, so an unreachable or broken catalog never empties the owner
//! lists airlock routes reviews by — not even across a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use airlock_core::service::ServiceCatalog;

use crate::Service;

/// Largest catalog document accepted.
pub const MAX_CATALOG_BYTES: usize = 4 << 20;
/// File in the data dir holding the last good copy.
pub const CACHE_FILE: &str = "service-catalog.json";

/// Why a fetch did not produce a catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The endpoint could not be reached or answered with an error status.
    #[error("cannot fetch the service catalog from {url}: {why}")]
    Fetch { url: String, why: String },
    /// The document was not a valid catalog.
    #[error("service catalog from {url} is invalid: {why}")]
    Invalid { url: String, why: String },
}

/// Fetches and parses the catalog at `url`, returning the parsed catalog and raw bytes.
pub async fn fetch(
    client: &reqwest::Client,
    url: &str,
) -> Result<(ServiceCatalog, Vec<u8>), CatalogError> {
    let fetch_err = |why: String| CatalogError::Fetch {
        url: url.to_string(),
        why,
    };
    let mut resp = client
        .get(url)
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| fetch_err(e.to_string()))?;
    if resp.status().is_redirection() {
        // Redirects are not followed (the client refuses them): a redirect
        // could move the owner lists to a host nobody configured.
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("(none)")
            .to_string();
        return Err(fetch_err(format!(
            "HTTP {} redirects to {location}, and redirects are not followed: set catalog_url to the final URL",
            resp.status()
        )));
    }
    if !resp.status().is_success() {
        return Err(fetch_err(format!("HTTP {}", resp.status())));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| fetch_err(e.to_string()))? {
        if body.len() + chunk.len() > MAX_CATALOG_BYTES {
            return Err(CatalogError::Invalid {
                url: url.to_string(),
                why: format!("larger than {MAX_CATALOG_BYTES} bytes"),
            });
        }
        body.extend_from_slice(&chunk);
    }
    let catalog = ServiceCatalog::from_json(&body).map_err(|e| CatalogError::Invalid {
        url: url.to_string(),
        why: e.to_string(),
    })?;
    Ok((catalog, body))
}

fn cache_path(data_dir: &Path) -> PathBuf {
    data_dir.join(CACHE_FILE)
}

/// The last good copy saved in `data_dir`, if any and valid.
pub fn load_cached(data_dir: &Path) -> Option<ServiceCatalog> {
    let bytes = std::fs::read(cache_path(data_dir)).ok()?;
    match ServiceCatalog::from_json(&bytes) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %e, "ignoring the cached service catalog");
            None
        }
    }
}

fn save_cached(data_dir: &Path, bytes: &[u8]) -> std::io::Result<()> {
    // Write then rename: a crash never leaves a half-written cache.
    let tmp = data_dir.join(format!("{CACHE_FILE}.tmp"));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, cache_path(data_dir))
}

/// Loads the cached copy, tries one fetch, then keeps the catalog fresh in
/// the background. Returns at once when no `catalog_url` is set.
pub async fn start(app: Arc<Service>) {
    let Some(url) = app.config.server.catalog_url.clone() else {
        return;
    };
    if let Some(c) = load_cached(&app.data_dir) {
        tracing::info!(services = c.len(), "loaded the cached service catalog");
        *app.services.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(c);
    }
    let client = match client() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build an HTTP client for catalog_url");
            return;
        }
    };
    refresh(&app, &client, &url).await;
    let every = Duration::from_secs(app.config.server.catalog_refresh.as_secs().max(1));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            refresh(&app, &client, &url).await;
        }
    });
}

/// The catalog's HTTP client: bounded, and never following a redirect.
pub fn client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(20))
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

async fn refresh(app: &Arc<Service>, client: &reqwest::Client, url: &str) {
    match fetch(client, url).await {
        Ok((catalog, bytes)) => {
            if *app.service_catalog() != catalog {
                tracing::info!(services = catalog.len(), url, "service catalog loaded");
            }
            *app.services.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(catalog);
            if let Err(e) = save_cached(&app.data_dir, &bytes) {
                tracing::warn!(error = %e, "cannot save the service catalog copy");
            }
            app.metrics.catalog_loaded(app.now().unix_timestamp());
        }
        Err(e) => {
            app.metrics.catalog_failed();
            tracing::warn!(error = %e, kept = app.service_catalog().len(),
                "service catalog refresh failed; keeping the last good copy");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    #[tokio::test]
    async fn a_redirect_is_an_error_naming_its_location() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            if let Ok((mut conn, _)) = listener.accept() {
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf);
                let _ = conn.write_all(
                    b"HTTP/1.1 302 Found\r\nLocation: http://evil.example/services.json\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        let url = format!("http://{addr}/services.json");
        let err = fetch(&client().unwrap(), &url)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("http://evil.example/services.json") && err.contains("not followed"),
            "{err}"
        );
    }
}
