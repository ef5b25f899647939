//! A small etcd v3 client over etcd's JSON gateway (`/v3/...`, keys and values base64):
//! reads, writes, the create-if-absent transaction leader election needs, deletes that
//! only succeed on an unchanged key, and leases. It speaks HTTP through reqwest, so the
//! build needs no protobuf compiler. Each call tries the endpoints in order.
//!
//! Secured etcd (`config::EtcdSecurity`): https endpoints are trusted only through the configured
//! CA (no system roots), a client certificate is presented when configured, and with a
//! user the client logs in (`/v3/auth/authenticate`) and sends the token etcd gives in
//! the `Authorization` header, logging in again when etcd says the token is no longer
//! valid.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};

use crate::config::EtcdSecurity;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    /// The lease the key is attached to; 0 for none.
    pub lease: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub id: i64,
    pub ttl: Duration,
}

pub struct Etcd {
    http: reqwest::Client,
    endpoints: Vec<String>,
    login: Option<Login>,
    /// The token of the last login; `None` until the first call (or after etcd refused it).
    token: std::sync::Mutex<Option<String>>,
}

struct Login {
    user: String,
    password: String,
}

/// etcd's int64 fields arrive as JSON strings; absent means 0.
fn int(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

fn b64(data: &[u8]) -> String {
    B64.encode(data)
}

/// The `range_end` that selects every key starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // every key
}

fn key_value(kv: &Value) -> anyhow::Result<KeyValue> {
    let decode = |field: &str| -> anyhow::Result<Vec<u8>> {
        let text = kv[field].as_str().unwrap_or_default();
        B64.decode(text)
            .with_context(|| format!("etcd sent a {field} that is not base64"))
    };
    Ok(KeyValue {
        key: String::from_utf8_lossy(&decode("key")?).into_owned(),
        value: decode("value")?,
        create_revision: int(&kv["create_revision"]),
        mod_revision: int(&kv["mod_revision"]),
        lease: int(&kv["lease"]),
    })
}

impl Etcd {
    /// `endpoints` like `http://10.0.0.1:2379`; `timeout` bounds each request.
    pub fn new(endpoints: &[String], timeout: Duration) -> anyhow::Result<Etcd> {
        Etcd::secured(endpoints, timeout, &EtcdSecurity::default())
    }

    /// As `new`, with TLS and user/password as `security` says.
    pub fn secured(
        endpoints: &[String],
        timeout: Duration,
        security: &EtcdSecurity,
    ) -> anyhow::Result<Etcd> {
        anyhow::ensure!(!endpoints.is_empty(), "no etcd endpoint configured");
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(2)));
        if security.ca_file.is_some() || security.cert_file.is_some() {
            builder = builder.use_preconfigured_tls(tls_config(security)?);
        } else if endpoints.iter().any(|e| e.starts_with("https://")) {
            anyhow::bail!(
                "https etcd endpoints need ha.etcd_ca_file (the CA that signs etcd's certificate)"
            );
        }
        let http = builder.build().context("build the etcd HTTP client")?;
        let login = match (&security.user, &security.password_file) {
            (Some(user), Some(file)) => {
                let password = std::fs::read_to_string(file).with_context(|| {
                    format!(
                        "read the etcd password (ha.etcd_password_file) {}",
                        file.display()
                    )
                })?;
                let password = password.trim_end_matches(['\n', '\r']).to_owned();
                anyhow::ensure!(
                    !password.is_empty(),
                    "the etcd password file (ha.etcd_password_file) {} is empty",
                    file.display()
                );
                Some(Login {
                    user: user.clone(),
                    password,
                })
            }
            (None, None) => None,
            _ => anyhow::bail!("ha.etcd_user and ha.etcd_password_file go together"),
        };
        Ok(Etcd {
            http,
            endpoints: endpoints
                .iter()
                .map(|e| e.trim_end_matches('/').to_owned())
                .collect(),
            login,
            token: std::sync::Mutex::new(None),
        })
    }

    /// POSTs `body` to `path`, logged in when a user is configured: a token etcd no longer
    /// accepts (expired, or etcd restarted) is replaced by a new login, once.
    async fn call(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let Some(login) = &self.login else {
            return self
                .send(path, &body, None)
                .await
                .map_err(Refusal::into_error);
        };
        // The lock is held only to read or replace the token, never across a request.
        let mut fresh = false;
        loop {
            let known = self.token.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let current = match known {
                Some(t) => t,
                None => {
                    fresh = true;
                    let t = self.authenticate(login).await?;
                    *self.token.lock().unwrap_or_else(|p| p.into_inner()) = Some(t.clone());
                    t
                }
            };
            match self.send(path, &body, Some(&current)).await {
                Err(Refusal::Auth(e)) if !fresh => {
                    tracing::debug!("etcd refused the token ({e:#}); logging in again");
                    *self.token.lock().unwrap_or_else(|p| p.into_inner()) = None;
                }
                other => return other.map_err(Refusal::into_error),
            }
        }
    }

    /// `/v3/auth/authenticate`: the token for `login`.
    async fn authenticate(&self, login: &Login) -> anyhow::Result<String> {
        let answer = self
            .send(
                "/v3/auth/authenticate",
                &json!({ "name": login.user, "password": login.password }),
                None,
            )
            .await
            .map_err(Refusal::into_error)
            .with_context(|| format!("log in to etcd as {}", login.user))?;
        answer["token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .context("etcd's login answer has no token")
    }

    /// POSTs `body` to `path` on the first endpoint that answers.
    async fn send(&self, path: &str, body: &Value, token: Option<&str>) -> Result<Value, Refusal> {
        let mut failures = Vec::new();
        for endpoint in &self.endpoints {
            let url = format!("{endpoint}{path}");
            let mut request = self.http.post(&url).json(body);
            if let Some(token) = token {
                request = request.header(reqwest::header::AUTHORIZATION, token);
            }
            match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let text = response
                        .text()
                        .await
                        .with_context(|| format!("read etcd's answer from {url}"))
                        .map_err(Refusal::Other)?;
                    let value: Value = serde_json::from_str(&text).map_err(|_| {
                        // The gateway answers some refusals in plain text.
                        let text: String = text.trim().chars().take(200).collect();
                        Refusal::Other(anyhow::anyhow!(
                            "etcd at {endpoint} refused {path} ({status}): {text}"
                        ))
                    })?;
                    if status.is_success() {
                        return Ok(value);
                    }
                    // An answer that is an error (bad request, lease not found) is final.
                    let message = value["message"]
                        .as_str()
                        .or(value["error"].as_str())
                        .unwrap_or("unknown error");
                    let error = anyhow::anyhow!("etcd at {endpoint} refused {path}: {message}");
                    return Err(if is_auth_refusal(status, message) {
                        Refusal::Auth(error)
                    } else {
                        Refusal::Other(error)
                    });
                }
                Err(e) => failures.push(format!("{endpoint}: {e}")),
            }
        }
        Err(Refusal::Other(anyhow::anyhow!(
            "no etcd endpoint answered {path}: {}",
            failures.join("; ")
        )))
    }

    pub async fn get(&self, key: &str) -> anyhow::Result<Option<KeyValue>> {
        let answer = self
            .call("/v3/kv/range", json!({ "key": b64(key.as_bytes()) }))
            .await?;
        answer["kvs"]
            .as_array()
            .and_then(|kvs| kvs.first())
            .map(key_value)
            .transpose()
    }

    /// Every key under `prefix`, in key order.
    pub async fn get_prefix(&self, prefix: &str) -> anyhow::Result<Vec<KeyValue>> {
        let answer = self
            .call(
                "/v3/kv/range",
                json!({ "key": b64(prefix.as_bytes()), "range_end": b64(&prefix_end(prefix.as_bytes())) }),
            )
            .await?;
        answer["kvs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(key_value)
            .collect()
    }

    /// Writes `key`; with a lease it disappears when the lease expires. Returns the revision.
    pub async fn put(&self, key: &str, value: &[u8], lease: Option<i64>) -> anyhow::Result<i64> {
        let mut body = json!({ "key": b64(key.as_bytes()), "value": b64(value) });
        if let Some(lease) = lease {
            body["lease"] = json!(lease.to_string());
        }
        let answer = self.call("/v3/kv/put", body).await?;
        Ok(int(&answer["header"]["revision"]))
    }

    /// Creates `key` only if it does not exist (one winner among racing nodes): `Ok(revision)`
    /// when created, `Err(current)` with the holder when it existed.
    pub async fn create(
        &self,
        key: &str,
        value: &[u8],
        lease: Option<i64>,
    ) -> anyhow::Result<Result<i64, KeyValue>> {
        let k = b64(key.as_bytes());
        let mut put = json!({ "key": k, "value": b64(value) });
        if let Some(lease) = lease {
            put["lease"] = json!(lease.to_string());
        }
        let answer = self
            .call(
                "/v3/kv/txn",
                json!({
                    "compare": [{ "target": "CREATE", "key": k, "create_revision": "0" }],
                    "success": [{ "request_put": put }],
                    "failure": [{ "request_range": { "key": k } }],
                }),
            )
            .await?;
        if answer["succeeded"].as_bool() == Some(true) {
            return Ok(Ok(int(&answer["header"]["revision"])));
        }
        let current = answer["responses"][0]["response_range"]["kvs"][0].clone();
        anyhow::ensure!(
            !current.is_null(),
            "etcd refused the create but shows no key {key}"
        );
        Ok(Err(key_value(&current)?))
    }

    /// Deletes `key` only if it is unchanged since `mod_revision` (still ours): whether it did.
    pub async fn delete_if_unchanged(&self, key: &str, mod_revision: i64) -> anyhow::Result<bool> {
        let k = b64(key.as_bytes());
        let answer = self
            .call(
                "/v3/kv/txn",
                json!({
                    "compare": [{ "target": "MOD", "key": k, "mod_revision": mod_revision.to_string() }],
                    "success": [{ "request_delete_range": { "key": k } }],
                }),
            )
            .await?;
        Ok(answer["succeeded"].as_bool() == Some(true))
    }

    /// Deletes `key`; whether it existed.
    pub async fn delete(&self, key: &str) -> anyhow::Result<bool> {
        let answer = self
            .call("/v3/kv/deleterange", json!({ "key": b64(key.as_bytes()) }))
            .await?;
        Ok(int(&answer["deleted"]) > 0)
    }

    pub async fn grant(&self, ttl: Duration) -> anyhow::Result<Lease> {
        let answer = self
            .call("/v3/lease/grant", json!({ "TTL": ttl.as_secs().max(1) }))
            .await?;
        Ok(Lease {
            id: int(&answer["ID"]),
            ttl: Duration::from_secs(int(&answer["TTL"]).max(0) as u64),
        })
    }

    /// Renews the lease; the remaining TTL, zero when it has already expired.
    pub async fn keep_alive(&self, lease: i64) -> anyhow::Result<Duration> {
        let answer = self
            .call("/v3/lease/keepalive", json!({ "ID": lease.to_string() }))
            .await?;
        Ok(Duration::from_secs(
            int(&answer["result"]["TTL"]).max(0) as u64
        ))
    }

    /// Ends the lease now, deleting every key attached to it.
    pub async fn revoke(&self, lease: i64) -> anyhow::Result<()> {
        self.call("/v3/lease/revoke", json!({ "ID": lease.to_string() }))
            .await?;
        Ok(())
    }
}

/// Why a call failed: etcd refused the credentials, or anything else.
enum Refusal {
    Auth(anyhow::Error),
    Other(anyhow::Error),
}

impl Refusal {
    fn into_error(self) -> anyhow::Error {
        match self {
            Refusal::Auth(e) | Refusal::Other(e) => e,
        }
    }
}

/// etcd's answers when a token is missing, expired or unknown (gRPC Unauthenticated).
fn is_auth_refusal(status: reqwest::StatusCode, message: &str) -> bool {
    status == reqwest::StatusCode::UNAUTHORIZED
        || message.contains("invalid auth token")
        || message.contains("user name is empty")
}

/// TLS toward etcd: only the configured CA is trusted; the client certificate is shown
/// when configured.
pub fn tls_config(security: &EtcdSecurity) -> anyhow::Result<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = &security.ca_file {
        let certs = CertificateDer::pem_file_iter(ca)
            .with_context(|| format!("read ha.etcd_ca_file {}", ca.display()))?
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| {
                format!("parse the certificates in ha.etcd_ca_file {}", ca.display())
            })?;
        anyhow::ensure!(
            !certs.is_empty(),
            "ha.etcd_ca_file {} holds no certificate",
            ca.display()
        );
        for cert in certs {
            roots
                .add(cert)
                .with_context(|| format!("use the CA in ha.etcd_ca_file {}", ca.display()))?;
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("choose TLS versions")?
    .with_root_certificates(roots);
    match (&security.cert_file, &security.key_file) {
        (Some(cert), Some(key)) => {
            let certs = CertificateDer::pem_file_iter(cert)
                .with_context(|| format!("read ha.etcd_cert_file {}", cert.display()))?
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("parse ha.etcd_cert_file {}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key).with_context(|| {
                format!("read the private key in ha.etcd_key_file {}", key.display())
            })?;
            builder
                .with_client_auth_cert(certs, key)
                .context("use ha.etcd_cert_file and ha.etcd_key_file")
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => anyhow::bail!("ha.etcd_cert_file and ha.etcd_key_file go together"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_end_where_etcd_expects() {
        assert_eq!(prefix_end(b"/pgp/"), b"/pgp0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }

    #[test]
    fn etcd_integers_arrive_as_strings() {
        assert_eq!(
            int(&json!("7587899107654812677")),
            7_587_899_107_654_812_677
        );
        assert_eq!(int(&json!(5)), 5);
        assert_eq!(int(&Value::Null), 0);
    }

    #[test]
    fn key_values_decode_from_the_gateway_form() {
        let kv = json!({"key": "L3BncC9sZWFkZXI=", "create_revision": "2", "mod_revision": "3",
                        "version": "1", "value": "bm9kZTE=", "lease": "42"});
        let kv = key_value(&kv).unwrap();
        assert_eq!(kv.key, "/pgp/leader");
        assert_eq!(kv.value, b"node1");
        assert_eq!((kv.create_revision, kv.mod_revision, kv.lease), (2, 3, 42));
    }
}
