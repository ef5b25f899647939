//! SHOW SOCKETS (PgBouncer 1.25): every client and server connection with the columns of
//! SHOW CLIENTS / SHOW SERVERS, the state named by the list it is on (`cl_active`,
//! `cl_waiting`, `cl_login`, `sv_active`, `sv_idle`, `sv_login`), then PgBouncer's seven
//! buffer columns. Those describe PgBouncer's own I/O buffers; the relay here reads into
//! and writes from per-client buffers that are not shared with the console, so they are 0.

use std::sync::Arc;

use bytes::BytesMut;

use super::show::{client_row, connection_columns, server_row, t, Table, INT4};
use crate::pooler::pool::Pool;
use crate::pooler::Pooler;

const BUFFER_COLUMNS: [&str; 7] = [
    "recv_pos",
    "pkt_pos",
    "pkt_remain",
    "send_pos",
    "send_remain",
    "pkt_avail",
    "send_avail",
];

pub fn sockets(pooler: &Pooler, pools: &[Arc<Pool>], out: &mut BytesMut) {
    let mut columns = connection_columns();
    columns.extend(BUFFER_COLUMNS.iter().map(|c| (*c, INT4)));
    let mut table = Table::new(&columns);
    let mut push = |mut row: Vec<Option<String>>| {
        row.extend(BUFFER_COLUMNS.iter().map(|_| t(0)));
        table.row(row);
    };
    // Clients as PgBouncer's lists hold them: logged in (active or idle), waiting for a
    // server, or still logging in. The console's own sessions are clients too.
    for client in pooler.clients() {
        push(client_row(&client, client_list(client.state.get())));
    }
    for pool in pools {
        for server in pool.servers() {
            let state = server_list(server.state.get());
            push(server_row(pooler, pool, &server, state));
        }
    }
    table.write(out, "SHOW");
}

/// The PgBouncer list a client in SHOW CLIENTS' `state` is on.
fn client_list(state: &str) -> &'static str {
    match state {
        "waiting" => "cl_waiting",
        "login" => "cl_login",
        _ => "cl_active",
    }
}

/// The PgBouncer list a server connection in SHOW SERVERS' `state` is on.
fn server_list(state: &str) -> &'static str {
    match state {
        "active" => "sv_active",
        "login" => "sv_login",
        _ => "sv_idle",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn states_name_pgbouncer_lists() {
        assert_eq!(super::client_list("idle"), "cl_active");
        assert_eq!(super::client_list("active"), "cl_active");
        assert_eq!(super::client_list("waiting"), "cl_waiting");
        assert_eq!(super::client_list("login"), "cl_login");
        assert_eq!(super::server_list("active"), "sv_active");
        assert_eq!(super::server_list("idle"), "sv_idle");
        assert_eq!(super::server_list("login"), "sv_login");
    }
}
