//! A small blocking HTTP client for the agent's API (reqwest on a private current-thread runtime).

use std::fs;
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use super::TestAgent;

pub struct Http {
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Http {
    pub fn new() -> Http {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // Every request has a deadline, so a hung agent fails the test instead of hanging it.
        // An agent serving TLS has a self-signed certificate; the harness only needs its
        // answers (tls_defaults.rs checks that the CLI pins that certificate).
        // No idle connections kept: this runtime only runs during a request, so a kept
        // connection cannot see the agent close it after its keep-alive limit
        // (`api.header_timeout_seconds`) and the next request would meet a dead socket.
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(0)
            .danger_accept_invalid_certs(true)
            .build()
            .unwrap();
        Http { runtime, client }
    }

    /// Sends one request; returns the status code and the body (as JSON, or as a JSON string
    /// when the body is not JSON). `Err` when no response arrived at all.
    pub fn request(
        &self,
        method: Method,
        url: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(u16, Value), reqwest::Error> {
        self.runtime.block_on(async {
            let mut request = self.client.request(method, url);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request.send().await?;
            let code = response.status().as_u16();
            let text = response.text().await?;
            Ok((
                code,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            ))
        })
    }
}

/// The agent's HTTP API.
impl TestAgent {
    /// `GET path` without a token; panics if the agent does not answer.
    pub fn get(&self, path: &str) -> (u16, Value) {
        self.api(Method::GET, path, None, None)
    }

    /// Any API request; panics if the agent does not answer.
    pub fn api(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.api_url());
        self.http
            .request(method, &url, token, body)
            .unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    /// The status code of `GET /health`, or `None` if nothing answered.
    pub fn health_code(&self) -> Option<u16> {
        let url = format!("{}/health", self.api_url());
        self.http
            .request(Method::GET, &url, None, None)
            .ok()
            .map(|(code, _)| code)
    }

    /// `GET /status`, asserted to be 200.
    pub fn status(&self) -> Value {
        let (code, body) = self.get("/status");
        assert_eq!(code, 200, "/status: {body}");
        body
    }

    pub fn admin_token(&self) -> String {
        fs::read_to_string(self.data_dir().join("run/admin_token"))
            .unwrap()
            .trim()
            .to_owned()
    }
}
