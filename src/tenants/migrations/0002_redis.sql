-- A tenant's Redis (dedicated mode): the TCP port of its redis-server and its maxmemory
-- in bytes; both NULL when the tenant has none.
ALTER TABLE pgplatform.tenants
    ADD COLUMN redis_port integer UNIQUE CHECK (redis_port BETWEEN 1 AND 65535),
    ADD COLUMN redis_maxmemory bigint CHECK (redis_maxmemory > 0),
    ADD CONSTRAINT redis_port_and_maxmemory_together
        CHECK ((redis_port IS NULL) = (redis_maxmemory IS NULL));
