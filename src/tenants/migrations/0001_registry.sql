-- The tenant registry. It lives in PostgreSQL so it is backed up and replicated with
-- everything else.
CREATE TABLE pgplatform.tenants (
    name             text PRIMARY KEY,
    -- 'creating' and 'dropping' mark an operation in flight; the agent finishes or undoes
    -- them on start, so a crash never leaves half a tenant.
    state            text NOT NULL DEFAULT 'creating'
                     CHECK (state IN ('creating', 'ready', 'dropping')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    rotated_at       timestamptz,
    extensions       text[] NOT NULL DEFAULT '{}',
    connection_limit integer NOT NULL DEFAULT -1,
    readonly_role    text
);
