-- x * x for sums of squares, without PostgreSQL's underflow error.
--
-- float8 multiplication raises "value out of range: underflow" when the product of
-- two non-zero numbers rounds to zero (float8_mul in src/include/utils/float.h),
-- which x * x does for |x| < 1.5e-162. Such a reward is valid (0 < 1e-170 < 1 lies in
-- the default reward range) yet `sum(x * x)` failed on it: the group commit that
-- carried it failed with every reward in it (all answered UNAVAILABLE; the client's
-- retries failed every later group they joined), and so did the daily verdict's and
-- the reward guardrail's queries over `rewards`. Below 1e-160 the true square is under
-- 1e-320 (zero or subnormal as a double) and counts as 0.
--
-- A single-expression SQL function without STRICT: the planner inlines it.
CREATE FUNCTION banditd_square(x double precision) RETURNS double precision
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT CASE WHEN abs(x) < 1e-160 THEN 0 ELSE x * x END $$;
