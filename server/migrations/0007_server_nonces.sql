-- Every server process (each worker, on every host, after every restart) takes the
-- server_nonce of its decision ids from this sequence when it starts, so no two
-- processes of a deployment ever sign with the same nonce: ids are unique by
-- construction rather than by the luck of a random draw. It cycles after 2^32 starts;
-- a nonce reused then is decades of restarts later, at a different decided_at.
CREATE SEQUENCE server_nonces AS bigint MINVALUE 0 MAXVALUE 4294967295 START 0 CYCLE;
