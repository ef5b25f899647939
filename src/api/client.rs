//! The CLI's client for a running agent: finds it through the data directory and speaks
//! the admin API with its token.

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
        let base = match data_dir.read_agent_info() {
            Ok(info) => info.api_url,
            Err(_) => format!("http://{}", config.api_listen),
        };
        let token = std::fs::read_to_string(data_dir.admin_token_file())
            .ok()
            .map(|t| t.trim().to_owned());
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(300))
            .build()
            .context("build the HTTP client")?;
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
                "cannot reach the pgplatform agent at {}: is `pgplatform up` running for this data directory? ({e})",
                self.base
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
