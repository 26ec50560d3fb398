-- Every statement asynctask runs, one named block each, in the order of a task's life.
--
-- A block starts with `-- name: <name>`, then a sentence or two on what it does, then
-- `-- params:` with the type of each $n. Paste a block into psql as it is (bind $n with PREPARE or
-- by hand). asynctask/core/sql.py loads this file once; asynctask/core/db.py runs each block by
-- name. Blocks marked `(prepared)` sit on the hot paths (claim, create, acknowledge) and run as
-- prepared statements unless database.prepared_statements is false (transaction pooling).
-- Task data is always returned as text (`data::text`): the API passes it through unparsed and a
-- worker decodes it per task, so no stored value, however deep, is ever parsed in the driver.


-- name: insert_one (prepared)
-- Create one task and NOTIFY its priority's channel with its id, delivered at commit. The idle
-- API's case, on the wake-up's critical path (a VALUES insert costs the server less than unnest).
-- params: $1 text (type), $2 smallint (priority), $3 int (max_attempts), $4 jsonb (data)
INSERT INTO tasks (type, priority, max_attempts, data)
VALUES ($1, $2, $3, $4)
RETURNING id, type, priority, state, attempts, max_attempts, scheduled_at, inserted_at, updated_at,
    started_at, finished_at, last_error, pg_notify(asynctask_channel(priority), id::text) AS notified;


-- name: insert_many (prepared)
-- Create many tasks in one statement and one transaction, the new rows in input order (identity
-- values are handed out in insertion order, and rows go in in input order, so ORDER BY id gives
-- it back). One NOTIFY per priority touched: the task's id when it is that priority's only new
-- task (an idle pool leader then claims it alone, workers/wakeup.py), else empty (wake the pool).
-- params: $1 text[] (types), $2 smallint[] (priorities), $3 int[] (max_attempts), $4 jsonb[] (data)
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::smallint[], $3::int[], $4::jsonb[])
        WITH ORDINALITY AS i(type, priority, max_attempts, data, n)
), inserted AS (
    INSERT INTO tasks (type, priority, max_attempts, data)
    SELECT type, priority, max_attempts, data FROM input ORDER BY n
    RETURNING id, type, priority, state, attempts, max_attempts, scheduled_at, inserted_at,
        updated_at, started_at, finished_at, last_error
), notified AS (
    SELECT pg_notify(asynctask_channel(priority),
        CASE WHEN count(*) = 1 THEN min(id)::text ELSE '' END)
    FROM inserted GROUP BY priority
)
SELECT inserted.* FROM inserted, (SELECT count(*) FROM notified) AS n ORDER BY id;


-- name: insert_many_ids (prepared)
-- As insert_many, answering only the ids and priorities (the batch route's answer).
-- params: $1 text[] (types), $2 smallint[] (priorities), $3 int[] (max_attempts), $4 jsonb[] (data)
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::smallint[], $3::int[], $4::jsonb[])
        WITH ORDINALITY AS i(type, priority, max_attempts, data, n)
), inserted AS (
    INSERT INTO tasks (type, priority, max_attempts, data)
    SELECT type, priority, max_attempts, data FROM input ORDER BY n
    RETURNING id, priority
), notified AS (
    SELECT pg_notify(asynctask_channel(priority),
        CASE WHEN count(*) = 1 THEN min(id)::text ELSE '' END)
    FROM inserted GROUP BY priority
)
SELECT id, priority FROM inserted, (SELECT count(*) FROM notified) AS n ORDER BY id;


-- name: get_task
-- One task as the API shows it.
-- params: $1 bigint (id)
SELECT id, type, priority, state, attempts, max_attempts, data::text AS data, scheduled_at,
    inserted_at, updated_at, started_at, finished_at, last_error
FROM tasks WHERE id = $1;


-- name: list_tasks
-- A page of tasks, newest first, keyset-paginated by id; a NULL filter matches everything. Run
-- with its values inlined (never prepared), so the planner folds the NULL tests away and picks
-- the index that fits the filters given.
-- params: $1 text (state), $2 smallint (priority), $3 text (type), $4 bigint (before id), $5 int (limit)
SELECT id, type, priority, state, attempts, max_attempts, data::text AS data, scheduled_at,
    inserted_at, updated_at, started_at, finished_at, last_error
FROM tasks
WHERE ($1::text IS NULL OR state = $1::text)
    AND ($2::smallint IS NULL OR priority = $2::smallint)
    AND ($3::text IS NULL OR type = $3::text)
    AND ($4::bigint IS NULL OR id < $4::bigint)
ORDER BY id DESC
LIMIT $5;


-- name: cancel_task
-- Cancel a task whose state is one of $2 (models.CANCELLABLE_STATES); no row if it is not. Its
-- waiters hear of it on tasks_finished, as from `finish`.
-- params: $1 bigint (id), $2 text[] (states it may be in)
UPDATE tasks SET state = 'cancelled', finished_at = now(), updated_at = now()
WHERE id = $1 AND state = ANY($2::text[])
RETURNING id, type, priority, state, attempts, max_attempts, data::text AS data, scheduled_at,
    inserted_at, updated_at, started_at, finished_at, last_error,
    pg_notify('tasks_finished', id::text) AS notified;  -- wake its waiters (wait_seconds)


-- name: retry_task
-- Make a task whose state is one of $2 (models.RETRYABLE_STATES) due now with a fresh attempt
-- budget, and wake its pool; no row if it is in another state.
-- params: $1 bigint (id), $2 text[] (states it may be in)
UPDATE tasks SET state = 'available', attempts = 0, scheduled_at = now(), finished_at = NULL,
    started_at = NULL, updated_at = now()
WHERE id = $1 AND state = ANY($2::text[])
RETURNING id, type, priority, state, attempts, max_attempts, data::text AS data, scheduled_at,
    inserted_at, updated_at, started_at, finished_at, last_error,
    pg_notify(asynctask_channel(priority), id::text) AS notified;


-- name: claim (prepared)
-- Claim due tasks of priority $1, oldest first: at most $2 of them, and no more than $6 bytes of
-- stored data past the first (so a worker never holds a pile of large tasks it cannot run yet).
-- The CTE is a fence: LIMIT applies to the locked rows, not to a re-planned join (Oban's basic.ex
-- note); SKIP LOCKED lets any number of workers and supervisors claim side by side; its WHERE is
-- tasks_due_idx's condition (a test pins the two together). Attempts are counted here, so a
-- crash mid-attempt still counts. The claim alone commits without waiting for its WAL flush
-- (set_config local to this transaction): a claim lost in a server crash puts the task back to
-- due, the token-checked acknowledgement then finds nothing, and the task runs again.
-- params: $1 smallint (priority), $2 int (limit), $3 text (locked_by), $4 uuid (token), $5 float8 (lease seconds), $6 bigint (byte budget)
WITH due AS (
    SELECT id, scheduled_at, pg_column_size(data) AS size
    FROM tasks
    WHERE state IN ('available', 'retrying') AND priority = $1 AND scheduled_at <= now()
    ORDER BY scheduled_at, id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), taken AS (
    SELECT id FROM (
        SELECT id, sum(size) OVER (ORDER BY scheduled_at, id) - size AS before FROM due
    ) AS d
    WHERE before = 0 OR before < $6
)
UPDATE tasks AS t SET state = 'running', attempts = t.attempts + 1, locked_by = $3,
    lock_token = $4, lease_expires_at = now() + $5 * interval '1 second', started_at = now(),
    updated_at = now()
FROM taken, (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit
WHERE t.id = taken.id
RETURNING t.id, t.type, t.attempts, t.max_attempts, t.data::text AS data;


-- name: finish
-- Write many decisions (lifecycle.decide) in one statement; each applies only while the task is
-- still running under the claim token it names, so a worker whose claim was rescued and taken
-- over can never overwrite the newer claim's outcome. A NULL delay keeps the task's place in the
-- queue (a hand-back); `uncharge` gives back the attempt the claim counted.
-- params: $1 bigint[] (ids), $2 uuid[] (tokens), $3 text[] (states), $4 int[] (delays, ms), $5 bool[] (uncharge), $6 text[] (errors)
-- Wait-for-result (issue 15): ONE pg_notify per statement, not per row, on tasks_finished with
-- the ids that reached a final state, comma-separated ('' if the list would not fit a payload's
-- 8000 bytes: every waiter re-reads), for the API's GET /api/tasks/{id}?wait_seconds=N
-- (service/waiters.py). Nothing is sent when no task finished (a retry, a hand-back). The UPDATE
-- is left unindented inside its CTE so that this addition changes none of its lines.
WITH written AS (
UPDATE tasks AS t SET state = o.state,
    attempts = t.attempts - o.uncharge::int,
    scheduled_at = CASE WHEN o.delay_ms IS NULL THEN t.scheduled_at
        ELSE now() + o.delay_ms * interval '1 millisecond' END,
    finished_at = CASE WHEN o.state IN ('completed', 'failed', 'cancelled') THEN now() END,
    started_at = CASE WHEN o.uncharge THEN NULL ELSE t.started_at END,
    last_error = coalesce(o.error, t.last_error),
    locked_by = NULL, lock_token = NULL, lease_expires_at = NULL, updated_at = now()
FROM unnest($1::bigint[], $2::uuid[], $3::text[], $4::int[], $5::bool[], $6::text[])
    AS o(id, token, state, delay_ms, uncharge, error)
WHERE t.id = o.id AND t.lock_token = o.token AND t.state = 'running'
RETURNING t.id, o.state IN ('completed', 'failed', 'cancelled') AS final
), finished AS (
    SELECT string_agg(id::text, ',') AS ids FROM written WHERE final
), notified AS (
    SELECT pg_notify('tasks_finished', CASE WHEN length(ids) < 8000 THEN ids ELSE '' END)
    FROM finished WHERE ids IS NOT NULL
)
SELECT (SELECT count(*) FROM written) AS written, (SELECT count(*) FROM notified) AS notified;


-- name: extend_leases
-- Push the lease of every task still held under these claim tokens.
-- params: $1 uuid[] (tokens), $2 float8 (lease seconds)
UPDATE tasks SET lease_expires_at = now() + $2 * interval '1 second'
WHERE state = 'running' AND lock_token = ANY($1::uuid[]);


-- name: running_lockers
-- The distinct `locked_by` values ("host:pid:slot") of running tasks claimed on one host.
-- params: $1 text (host, as a LIKE pattern: "<host>:%")
SELECT DISTINCT locked_by FROM tasks WHERE state = 'running' AND locked_by LIKE $1;


-- name: reclaim_lockers
-- Take over the running tasks of processes known to be dead, under a fresh claim token and a new
-- lease, so that their decisions are written by `finish` like a live worker's. Rows another
-- recoverer took first are skipped (re-checked after its lock is released).
-- params: $1 text[] (dead lockers), $2 text (our locked_by), $3 uuid (token), $4 float8 (lease seconds)
WITH held AS (
    SELECT id, locked_by FROM tasks
    WHERE state = 'running' AND locked_by = ANY($1::text[])
    FOR UPDATE
)
UPDATE tasks AS t SET locked_by = $2, lock_token = $3,
    lease_expires_at = now() + $4 * interval '1 second', updated_at = now()
FROM held WHERE t.id = held.id
RETURNING t.id, held.locked_by AS previous, t.attempts, t.max_attempts;


-- name: reclaim_expired
-- As reclaim_lockers, for running tasks whose lease ran out (their host died or was cut off):
-- the oldest first, at most $4, skipping rows another worker is rescuing.
-- params: $1 text (our locked_by), $2 uuid (token), $3 float8 (lease seconds), $4 int (limit)
WITH held AS (
    SELECT id, locked_by FROM tasks
    WHERE state = 'running' AND lease_expires_at < now()
    ORDER BY lease_expires_at
    LIMIT $4
    FOR UPDATE SKIP LOCKED
)
UPDATE tasks AS t SET locked_by = $1, lock_token = $2,
    lease_expires_at = now() + $3 * interval '1 second', updated_at = now()
FROM held WHERE t.id = held.id
RETURNING t.id, held.locked_by AS previous, t.attempts, t.max_attempts;


-- name: task_counts
-- Per priority and state: how many tasks, and how many finished in the last minute. One scan of
-- the table; callers cache the answer (metrics scrapes, /api/stats).
SELECT priority, state, count(*) AS tasks,
    count(*) FILTER (WHERE finished_at > now() - interval '1 minute') AS last_minute
FROM tasks GROUP BY priority, state;


-- name: queue_lag
-- Per priority in $1: seconds since its oldest due task became due (0 when none is waiting).
-- params: $1 smallint[] (priorities)
SELECT p.priority, coalesce(extract(epoch FROM now() - (
    SELECT scheduled_at FROM tasks
    WHERE state IN ('available', 'retrying') AND priority = p.priority AND scheduled_at <= now()
    ORDER BY scheduled_at LIMIT 1
)), 0)::float8 AS lag
FROM unnest($1::smallint[]) AS p(priority);


-- name: prune_finished
-- Delete up to $3 tasks in state $1 that finished more than $2 days ago. No index on
-- finished_at: it would cost every completion an extra index insert; old finished rows sit in
-- the table's first pages, so the limited scan finds them quickly.
-- params: $1 text (state), $2 float8 (days), $3 int (limit)
DELETE FROM tasks WHERE id IN (
    SELECT id FROM tasks
    WHERE state = $1 AND finished_at < now() - $2 * interval '1 day'
    LIMIT $3
);


-- name: try_lock
-- Take a session advisory lock if it is free (one pruner, one migration at a time).
-- params: $1 bigint (key)
SELECT pg_try_advisory_lock($1) AS locked;


-- name: lock
-- Wait for a session advisory lock (concurrent migrations queue behind each other).
-- params: $1 bigint (key)
SELECT pg_advisory_lock($1);


-- name: unlock
-- Release a session advisory lock.
-- params: $1 bigint (key)
SELECT pg_advisory_unlock($1);


-- name: connection_limits
-- The server's connection limit and the slots it keeps for superusers.
SELECT current_setting('max_connections')::int AS max,
    current_setting('superuser_reserved_connections')::int AS reserved;


-- name: ping
-- One round trip.
SELECT 1;
