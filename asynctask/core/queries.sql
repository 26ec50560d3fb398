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
-- A page of tasks, newest first, keyset-paginated by id. Run with its values inlined (never
-- prepared), so the planner folds the NULL tests away. tasks_list_idx is (state, priority, type,
-- id) without running tasks: for each (state, priority) of $1 x $2, `combos` finds the types present
-- (a loose index scan: one descent per type, or one probe for the type asked for), and `page` reads
-- at most $5 ids of each (state, priority, type), newest first, below the cursor $4. Running tasks
-- ($6: wanted) come from tasks_running_idx. A page therefore reads about $5 index entries per
-- combination present, never the table, even when the filter matches nothing or only old rows.
-- params: $1 text[] (states, running excluded), $2 smallint[] (priorities), $3 text (type), $4 bigint (before id), $5 int (limit), $6 bool (running too)
WITH RECURSIVE pairs AS (
    SELECT s.state, p.priority
    FROM unnest($1::text[]) AS s(state), unnest($2::smallint[]) AS p(priority)
), combos AS (
    SELECT pr.state, pr.priority, f.type FROM pairs AS pr, LATERAL (
        SELECT t.type FROM tasks AS t
        WHERE t.state <> 'running' AND t.state = pr.state AND t.priority = pr.priority
            AND ($3::text IS NULL OR t.type = $3::text)
        ORDER BY t.type LIMIT 1
    ) AS f
    UNION ALL
    SELECT c.state, c.priority, n.type FROM combos AS c, LATERAL (
        SELECT t.type FROM tasks AS t
        WHERE $3::text IS NULL AND t.state <> 'running' AND t.state = c.state
            AND t.priority = c.priority AND t.type > c.type
        ORDER BY t.type LIMIT 1
    ) AS n
), page AS (
    SELECT p.id FROM combos AS c, LATERAL (
        SELECT t.id FROM tasks AS t
        WHERE t.state <> 'running' AND t.state = c.state AND t.priority = c.priority
            AND t.type = c.type AND ($4::bigint IS NULL OR t.id < $4::bigint)
        ORDER BY t.id DESC LIMIT $5
    ) AS p
    UNION ALL
    SELECT id FROM tasks
    WHERE state = 'running' AND $6::bool AND priority = ANY($2::smallint[])
        AND ($3::text IS NULL OR type = $3::text) AND ($4::bigint IS NULL OR id < $4::bigint)
)
SELECT id, type, priority, state, attempts, max_attempts, data::text AS data, scheduled_at,
    inserted_at, updated_at, started_at, finished_at, last_error
FROM tasks
WHERE id IN (SELECT id FROM page ORDER BY id DESC LIMIT $5)
ORDER BY id DESC;


-- name: cancel_task
-- Cancel a task whose state is one of $2 (models.CANCELLABLE_STATES); no row if it is not.
-- params: $1 bigint (id), $2 text[] (states it may be in)
UPDATE tasks SET state = 'cancelled', finished_at = now(), updated_at = now()
WHERE id = $1 AND state = ANY($2::text[])
RETURNING id, type, priority, state, attempts, max_attempts, data::text AS data, scheduled_at,
    inserted_at, updated_at, started_at, finished_at, last_error;


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
WHERE t.id = o.id AND t.lock_token = o.token AND t.state = 'running';


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


-- ================================================================================================
-- Dashboard (issue 14): paused queues, the worker registry, counts, rates, bulk actions.
-- ================================================================================================


-- name: queue_states
-- Every priority: paused or not, since when (the last change), and the change's version.
SELECT priority, paused, changed_at, version FROM queues ORDER BY priority;


-- name: set_paused
-- Pause ($2 true) or resume ($2 false) a priority; the row as it is now. A change bumps the version
-- and NOTIFYs asynctask_queues with the priority's name (a pool's leader hears it, workers/pause.py).
-- params: $1 smallint (priority), $2 bool (paused)
UPDATE queues SET paused = $2,
    changed_at = CASE WHEN paused = $2 THEN changed_at ELSE now() END,
    version = version + (paused <> $2)::int
WHERE priority = $1
RETURNING priority, paused, changed_at, version,
    pg_notify('asynctask_queues', (ARRAY['high', 'normal', 'low'])[priority]) AS notified;


-- name: queue_state
-- One priority's pause flag and version (a worker's re-read after a notification).
-- params: $1 smallint (priority)
SELECT paused, version FROM queues WHERE priority = $1;


-- name: heartbeat
-- A worker's beat: its row in the registry, created or refreshed (a new pid in the same slot of the
-- same supervisor is a restart); answers its priority's pause flag, so the beat doubles as the
-- fallback for a missed pause notification.
-- params: $1 text (host), $2 int (supervisor pid), $3 text (slot), $4 smallint (priority), $5 int (pid), $6 text (locked_by), $7 text (status), $8 bigint (task id)
WITH beat AS (
    INSERT INTO workers AS w (host, supervisor_pid, slot, priority, pid, locked_by, status, task_id)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
    ON CONFLICT (host, supervisor_pid, slot) DO UPDATE SET
        restarts = w.restarts + (w.pid <> excluded.pid)::int,
        started_at = CASE WHEN w.pid = excluded.pid THEN w.started_at ELSE now() END,
        pid = excluded.pid, priority = excluded.priority, locked_by = excluded.locked_by,
        status = excluded.status, task_id = excluded.task_id, heartbeat_at = now(),
        rescued_at = NULL
    RETURNING 1
)
SELECT paused, version FROM queues, (SELECT count(*) FROM beat) AS b WHERE priority = $4;


-- name: forget_worker
-- A worker that stops for good takes its row out of the registry (a crashed one leaves it behind,
-- to be shown as dead and cleaned up later).
-- params: $1 text (host), $2 int (supervisor pid), $3 text (slot), $4 int (pid)
DELETE FROM workers WHERE host = $1 AND supervisor_pid = $2 AND slot = $3 AND pid = $4;


-- name: list_workers
-- The registry for GET /api/workers: every slot of every supervisor, and whether it beat within
-- $1 seconds (the database's clock decides, so hosts' clocks may disagree).
-- params: $1 float8 (dead after, seconds)
SELECT host, supervisor_pid, slot, priority, pid, status, task_id, first_started_at, started_at,
    restarts, heartbeat_at, rescued_at,
    heartbeat_at >= now() - $1 * interval '1 second' AS alive, now() AS now
FROM workers ORDER BY host, supervisor_pid, priority, slot;


-- name: dead_supervisors
-- Supervisors none of whose workers beat within $1 seconds and whose tasks were not rescued yet:
-- each with the `locked_by` of its workers' last processes.
-- params: $1 float8 (dead after, seconds)
SELECT host, supervisor_pid, array_agg(locked_by) AS lockers,
    extract(epoch FROM now() - max(heartbeat_at))::float8 AS silent_seconds
FROM workers
GROUP BY host, supervisor_pid
HAVING max(heartbeat_at) < now() - $1 * interval '1 second' AND bool_or(rescued_at IS NULL);


-- name: mark_rescued
-- Record that a dead supervisor's tasks were rescued (unless it beat again meanwhile).
-- params: $1 text (host), $2 int (supervisor pid), $3 float8 (dead after, seconds)
UPDATE workers SET rescued_at = now()
WHERE host = $1 AND supervisor_pid = $2 AND heartbeat_at < now() - $3 * interval '1 second';


-- name: forget_old_workers
-- Drop registry rows silent for more than $1 seconds (dead supervisors shown long enough).
-- params: $1 float8 (seconds)
DELETE FROM workers WHERE heartbeat_at < now() - $1 * interval '1 second';


-- name: compact_counts
-- Move the appended count deltas into the totals (task_counts) and the per-minute moves
-- (task_minutes), in one transaction, if no one else is doing it (advisory lock $1, held until the
-- statement commits); drop minutes older than a day. Rows appended meanwhile stay for the next one.
-- params: $1 bigint (lock key)
WITH lock AS (
    SELECT pg_try_advisory_xact_lock($1) AS got
), moved AS (
    DELETE FROM task_count_deltas WHERE (SELECT got FROM lock) RETURNING *
), totals AS (
    INSERT INTO task_counts AS c (priority, state, type, tasks)
    SELECT priority, state, type, sum(delta) FROM moved GROUP BY priority, state, type
    ON CONFLICT (priority, state, type) DO UPDATE SET tasks = c.tasks + excluded.tasks
), minutes AS (
    INSERT INTO task_minutes AS m (minute, priority, state, entered, created)
    SELECT minute, priority, state, sum(entered), sum(created) FROM moved
    GROUP BY minute, priority, state HAVING sum(entered) <> 0 OR sum(created) <> 0
    ON CONFLICT (minute, priority, state) DO UPDATE
        SET entered = m.entered + excluded.entered, created = m.created + excluded.created
), expired AS (
    DELETE FROM task_minutes
    WHERE minute < now() - interval '1 day' AND (SELECT got FROM lock)
)
SELECT (SELECT got FROM lock) AS locked, count(*) AS moved FROM moved;


-- name: forget_zero_counts
-- Drop totals that reached zero (a type no longer in the table).
DELETE FROM task_counts WHERE tasks = 0;


-- name: vacuum_count_deltas
-- The deltas table only gains and loses rows; vacuum it even where autovacuum is off. Without
-- truncation: that takes an exclusive lock, and every statement changing tasks inserts here.
VACUUM (SKIP_LOCKED, TRUNCATE false) task_count_deltas;


-- name: count_tasks
-- Exact task counts per (priority, state, type): the compacted totals plus the deltas since. Never
-- touches the tasks table. Only non-zero counts.
SELECT priority, state, type, sum(tasks)::bigint AS tasks FROM (
    SELECT priority, state, type, tasks FROM task_counts
    UNION ALL
    SELECT priority, state, type, delta FROM task_count_deltas
) AS counted
GROUP BY priority, state, type HAVING sum(tasks) <> 0;


-- name: task_moves
-- One row per minute of the last $1 minutes, oldest first, the current (partial) one last: tasks
-- created, and per state the tasks that moved into it (a JSON object, states without moves left
-- out). From the compacted minutes plus the deltas since; the database's now() for the partial one.
-- params: $1 int (minutes)
WITH since AS (
    SELECT date_trunc('minute', now()) - ($1 - 1) * interval '1 minute' AS minute
), moves AS (
    SELECT minute, state, entered, created FROM task_minutes
    WHERE minute >= (SELECT minute FROM since)
    UNION ALL
    SELECT minute, state, entered, created FROM task_count_deltas
    WHERE minute >= (SELECT minute FROM since)
), per_state AS (
    SELECT minute, state, sum(entered) AS entered, sum(created) AS created
    FROM moves GROUP BY minute, state
)
SELECT m.minute, coalesce(sum(s.created), 0)::bigint AS created,
    coalesce(jsonb_object_agg(s.state, s.entered) FILTER (WHERE s.entered <> 0), '{}') AS entered,
    now() AS now
FROM generate_series((SELECT minute FROM since), date_trunc('minute', now()), interval '1 minute')
    AS m(minute)
LEFT JOIN per_state AS s ON s.minute = m.minute
GROUP BY m.minute ORDER BY m.minute;


-- name: workers_summary
-- For the overview: supervisors and worker slots, alive (beat within $1 seconds) or not, and busy.
-- params: $1 float8 (dead after, seconds)
WITH s AS (
    SELECT max(heartbeat_at) >= now() - $1 * interval '1 second' AS alive, count(*) AS slots,
        count(*) FILTER (WHERE status = 'busy'
            AND heartbeat_at >= now() - $1 * interval '1 second') AS busy
    FROM workers GROUP BY host, supervisor_pid
)
SELECT count(*) FILTER (WHERE alive) AS alive, count(*) FILTER (WHERE NOT alive) AS dead,
    coalesce(sum(slots) FILTER (WHERE alive), 0)::bigint AS slots,
    coalesce(sum(busy), 0)::bigint AS busy
FROM s;


-- name: bulk_cancel
-- Cancel, in one statement, every task in one of the states $1 (models.CANCELLABLE_STATES, or the
-- one asked for) matching the optional priority and type; how many. Run inline: the planner folds
-- the NULL tests and takes the ranges of tasks_list_idx.
-- params: $1 text[] (states), $2 smallint (priority), $3 text (type)
UPDATE tasks SET state = 'cancelled', finished_at = now(), updated_at = now()
WHERE state = ANY($1::text[])
    AND ($2::smallint IS NULL OR priority = $2::smallint)
    AND ($3::text IS NULL OR type = $3::text);


-- name: bulk_retry
-- As retry_task for every task in one of the states $1 (models.RETRYABLE_STATES, or the one asked
-- for) matching the optional priority and type, in one statement; one NOTIFY per priority touched
-- (an empty payload: wake the pool). How many, per priority.
-- params: $1 text[] (states), $2 smallint (priority), $3 text (type)
WITH retried AS (
    UPDATE tasks SET state = 'available', attempts = 0, scheduled_at = now(), finished_at = NULL,
        started_at = NULL, updated_at = now()
    WHERE state = ANY($1::text[])
        AND ($2::smallint IS NULL OR priority = $2::smallint)
        AND ($3::text IS NULL OR type = $3::text)
    RETURNING priority
)
SELECT priority, count(*) AS tasks, pg_notify(asynctask_channel(priority), '') AS notified
FROM retried GROUP BY priority;
