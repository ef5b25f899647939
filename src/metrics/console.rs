//! Reads the pooler's admin console (`SHOW POOLS`, …) over its unix socket, as the
//! pgbouncer exporter reads PgBouncer's: the metrics see exactly what operators see.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use tokio_postgres::SimpleQueryMessage;

/// One row of a SHOW command: column name → text value (NULL as `None`).
pub type Row = HashMap<String, Option<String>>;

/// Connection to the console of the pooler listening on `port` in `socket_dir`.
pub struct Console(tokio_postgres::Client);

impl Console {
    pub async fn connect(socket_dir: &Path, port: u16) -> anyhow::Result<Console> {
        let client = crate::pg::connect::superuser(socket_dir, port, "pgbouncer")
            .await
            .context("connect to the pooler's admin console")?;
        Ok(Console(client))
    }

    pub async fn show(&self, what: &str) -> anyhow::Result<Vec<Row>> {
        let messages = self
            .0
            .simple_query(&format!("SHOW {what}"))
            .await
            .with_context(|| format!("SHOW {what} on the pooler's console"))?;
        Ok(messages
            .iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(row) => Some(
                    row.columns()
                        .iter()
                        .enumerate()
                        .map(|(i, c)| (c.name().to_owned(), row.get(i).map(str::to_owned)))
                        .collect(),
                ),
                _ => None,
            })
            .collect())
    }
}

/// A column's text, or "" when missing or NULL.
pub fn text<'a>(row: &'a Row, column: &str) -> &'a str {
    row.get(column).and_then(|v| v.as_deref()).unwrap_or("")
}

/// A column as a number, if it is one.
pub fn number(row: &Row, column: &str) -> Option<f64> {
    text(row, column).parse().ok()
}
