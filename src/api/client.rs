//! The CLI's client for a running agent: finds it through the data directory and speaks
//! the admin API with its token. An agent serving TLS is trusted by its certificate
//! alone: the one `run/agent.json` names is pinned, so no CA and no host name is needed
//! and no other certificate is accepted.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::de::DeserializeOwned;

use crate::config::Config;
use crate::data_dir::DataDir;

pub struct AgentClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl AgentClient {
    /// The agent serving `config`'s data directory; falls back to `api.listen` when the
    /// agent has not published itself (only unauthenticated endpoints work then).
    pub fn discover(config: &Config) -> anyhow::Result<AgentClient> {
        let data_dir = DataDir::new(&config.data_dir);
        let (base, cert) = match data_dir.read_agent_info() {
            Ok(info) => (info.api_url, info.api_cert_file),
            Err(_) => (
                format!("{}://{}", config.api.scheme(), config.api_listen),
                super::served_cert_file(config),
            ),
        };
        let token = std::fs::read_to_string(data_dir.admin_token_file())
            .ok()
            .map(|t| t.trim().to_owned());
        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(300));
        if base.starts_with("https://") {
            let cert = cert.with_context(|| {
                format!(
                    "{} names no certificate for the agent's https API",
                    data_dir.agent_info_file().display()
                )
            })?;
            builder = builder.use_preconfigured_tls(pinned_tls(&cert)?);
        }
        let http = builder.build().context("build the HTTP client")?;
        Ok(AgentClient { base, token, http })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.http.get(self.url(path))).await
    }

    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> anyhow::Result<T> {
        self.send(self.http.post(self.url(path)).json(body)).await
    }

    pub async fn patch<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> anyhow::Result<T> {
        self.send(self.http.patch(self.url(path)).json(body)).await
    }

    /// DELETE whose answer is a body (`tenant redis disable`).
    pub async fn delete_for<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.http.delete(self.url(path))).await
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<()> {
        self.send::<serde_json::Value>(self.http.delete(self.url(path)))
            .await
            .map(|_| ())
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<T> {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = request.send().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the pgplatform agent at {}: is `pgplatform up` running for this data directory? ({})",
                self.base,
                with_causes(&e)
            )
        })?;
        let status = response.status();
        let body = response.bytes().await.context("read the agent's answer")?;
        if !status.is_success() {
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            bail!("{message}");
        }
        if body.is_empty() {
            return serde_json::from_value(serde_json::Value::Null).context("empty answer");
        }
        serde_json::from_slice(&body).context("parse the agent's answer")
    }
}

/// An error and its causes, `: `-separated (reqwest's own text omits why TLS failed).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(&format!(": {e}"));
        cause = e.source();
    }
    text
}

/// A TLS client configuration that accepts exactly the certificate in `cert_file` (the
/// first one of the PEM file: the server's own), checking that the server holds its key.
pub fn pinned_tls(cert_file: &Path) -> anyhow::Result<rustls::ClientConfig> {
    let pinned = crate::pooler::tls::read_certificates(cert_file)?
        .into_iter()
        .next()
        .context("no certificate")?;
    crate::tls_pin::client_config(
        crate::tls_pin::sha256(pinned.as_ref()),
        format!(
            "the agent's TLS certificate is not the one in {}",
            cert_file.display()
        ),
    )
}
