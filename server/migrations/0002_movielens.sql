-- MovieLens ratings for offline replay and the demo (`banditctl load-movielens`).
-- Several datasets coexist, keyed by name. The loader replaces a dataset by deleting
-- and re-writing its rows in one transaction, so readers see the old or the new
-- version, never a mix. There are no foreign keys from the ratings and movies to
-- movielens_datasets on purpose: an RI trigger queues one event per COPYed row
-- (25 million for ml-25m); the loader's transaction keeps the three tables consistent.
--
-- Only banditctl's offline tools read these tables; the server never does. They are in
-- the server's migration sequence anyway because a deployment has one database and one
-- schema version: `banditctl migrate` brings all of it to the version every server and
-- banditctl checks for, and a second, offline-only sequence could drift from it.

CREATE TABLE IF NOT EXISTS movielens_datasets (
    name           text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    source_format  text NOT NULL CHECK (source_format IN ('grouplens-100k', 'movielens-csv', 'recbole')),
    source_path    text NOT NULL,
    n_ratings      bigint NOT NULL CHECK (n_ratings >= 0),
    n_users        integer NOT NULL CHECK (n_users >= 0),
    n_movies       integer NOT NULL CHECK (n_movies >= 0),
    has_movies     boolean NOT NULL,       -- false when the source had no movie file
    loaded_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS movielens_movies (
    dataset   text NOT NULL,
    movie_id  bigint NOT NULL,
    title     text NOT NULL,              -- without the trailing "(year)"
    year      integer,
    genres    text[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (dataset, movie_id)
);

CREATE TABLE IF NOT EXISTS movielens_ratings (
    dataset   text NOT NULL,
    user_id   bigint NOT NULL,
    movie_id  bigint NOT NULL,
    rating    real NOT NULL CHECK (rating >= 0.5 AND rating <= 5),
    rated_at  timestamptz,                -- NULL when the source has no timestamps
    PRIMARY KEY (dataset, user_id, movie_id)
);
