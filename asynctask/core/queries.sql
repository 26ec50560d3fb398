-- Every statement asynctask runs, one named block each, in the order of a task's life.
--
-- A block starts with `-- name: <name>`, then a sentence or two on what it does, then
-- `-- params:` with the type of each $n. Paste a block into psql as it is (bind $n with PREPARE or
-- by hand). asynctask/core/sql.py loads this file once; the modules of asynctask/core (task_rows.py,
-- claims.py, creates.py, ...) run each block by name. Blocks marked `(prepared)` sit on the hot
-- paths (claim, create, acknowledge) and run as prepared statements unless
-- database.prepared_statements is false (transaction pooling).
-- Task data is always returned as text (`data::text`): the API passes it through unparsed and a
-- worker decodes it per task, so no stored value, however deep, is ever parsed in the driver.


-- name: insert_one (prepared)
-- Create one task and NOTIFY its priority's channel with its id, delivered at commit. The idle
-- API's case, on the wake-up's critical path (a VALUES insert costs the server less than unnest).
-- It is due at $5, or $6 seconds from now, or now (never earlier than now); a task due later
-- NOTIFYs "at <epoch> <id>" instead (asynctask_at), for the pool leader's timer.
-- params: $1 text (type), $2 smallint (priority), $3 int (max_attempts), $4 jsonb (data), $5 timestamptz (scheduled_at), $6 float8 (delay seconds)
INSERT INTO tasks (type, priority, max_attempts, data, scheduled_at)
VALUES ($1, $2, $3, $4, greatest(coalesce($5, now() + $6 * interval '1 second'), now()))
RETURNING id, type, priority, asynctask_state(state, scheduled_at) AS state, attempts,
    max_attempts, scheduled_at, inserted_at, updated_at, started_at, finished_at, last_error,
    unique_key, pg_notify(asynctask_channel(priority),
        CASE WHEN scheduled_at > now() THEN asynctask_at(scheduled_at, id::text)
            ELSE id::text END) AS notified;


-- name: insert_many (prepared)
-- Create many tasks in one statement and one transaction, the new rows in input order (identity
-- values are handed out in insertion order, and rows go in in input order, so ORDER BY id gives
-- it back). One NOTIFY per priority touched: the task's id when it is that priority's only new
-- task due now (an idle pool leader then claims it alone, workers/wakeup.py), else empty (wake
-- the pool); and for tasks due later, one "at <epoch> <id or *>" with the earliest time, "*"
-- when several are due then (asynctask_at).
-- params: $1 text[] (types), $2 smallint[] (priorities), $3 int[] (max_attempts), $4 jsonb[] (data), $5 timestamptz[] (scheduled_at), $6 float8[] (delay seconds)
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::smallint[], $3::int[], $4::jsonb[], $5::timestamptz[],
        $6::float8[]) WITH ORDINALITY AS i(type, priority, max_attempts, data, at, delay, n)
), inserted AS (
    INSERT INTO tasks (type, priority, max_attempts, data, scheduled_at)
    SELECT type, priority, max_attempts, data,
        greatest(coalesce(at, now() + delay * interval '1 second'), now())
    FROM input ORDER BY n
    RETURNING id, type, priority, asynctask_state(state, scheduled_at) AS state, attempts,
        max_attempts, scheduled_at, inserted_at, updated_at, started_at, finished_at, last_error,
        unique_key
), notified AS (
    SELECT pg_notify(asynctask_channel(priority),
        CASE WHEN count(*) = 1 THEN min(id)::text ELSE '' END)
    FROM inserted WHERE scheduled_at <= now() GROUP BY priority
    UNION ALL
    SELECT pg_notify(asynctask_channel(priority), asynctask_at(scheduled_at,
        CASE WHEN count(*) = 1 THEN min(id)::text ELSE '*' END))
    FROM (
        SELECT priority, id, scheduled_at,
            min(scheduled_at) OVER (PARTITION BY priority) AS earliest
        FROM inserted WHERE scheduled_at > now()
    ) AS later
    WHERE scheduled_at = earliest GROUP BY priority, scheduled_at
)
SELECT inserted.* FROM inserted, (SELECT count(*) FROM notified) AS n ORDER BY id;


-- name: insert_many_ids (prepared)
-- As insert_many, answering only the ids and priorities (the batch route's answer).
-- params: $1 text[] (types), $2 smallint[] (priorities), $3 int[] (max_attempts), $4 jsonb[] (data), $5 timestamptz[] (scheduled_at), $6 float8[] (delay seconds)
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::smallint[], $3::int[], $4::jsonb[], $5::timestamptz[],
        $6::float8[]) WITH ORDINALITY AS i(type, priority, max_attempts, data, at, delay, n)
), inserted AS (
    INSERT INTO tasks (type, priority, max_attempts, data, scheduled_at)
    SELECT type, priority, max_attempts, data,
        greatest(coalesce(at, now() + delay * interval '1 second'), now())
    FROM input ORDER BY n
    RETURNING id, priority, scheduled_at
), notified AS (
    SELECT pg_notify(asynctask_channel(priority),
        CASE WHEN count(*) = 1 THEN min(id)::text ELSE '' END)
    FROM inserted WHERE scheduled_at <= now() GROUP BY priority
    UNION ALL
    SELECT pg_notify(asynctask_channel(priority), asynctask_at(scheduled_at,
        CASE WHEN count(*) = 1 THEN min(id)::text ELSE '*' END))
    FROM (
        SELECT priority, id, scheduled_at,
            min(scheduled_at) OVER (PARTITION BY priority) AS earliest
        FROM inserted WHERE scheduled_at > now()
    ) AS later
    WHERE scheduled_at = earliest GROUP BY priority, scheduled_at
)
SELECT id, priority FROM inserted, (SELECT count(*) FROM notified) AS n ORDER BY id;


-- name: get_task
-- One task as the API shows it, with its result (JSON text; lists leave it out).
-- params: $1 bigint (id)
SELECT id, type, priority, asynctask_state(state, scheduled_at) AS state, attempts, max_attempts,
    data::text AS data, scheduled_at, inserted_at, updated_at, started_at, finished_at, last_error,
    unique_key, result::text AS result
FROM tasks WHERE id = $1;


-- name: list_tasks
-- A page of tasks, newest first, keyset-paginated by id. Run with its values inlined (never
-- prepared), so the planner folds the NULL tests away. tasks_list_idx is (state, priority, type,
-- id) without running tasks: for each (state, priority) of $1 x $2, `combos` finds the types present
-- (a loose index scan: one descent per type, or one probe for the type asked for), and `page` reads
-- at most $5 ids of each (state, priority, type), newest first, below the cursor $4. Running tasks
-- ($6: wanted) come from tasks_running_idx. A page therefore reads about $5 index entries per
-- combination present, never the table, even when the filter matches nothing or only old rows.
-- $7 filters on the state as shown (scheduled is derived: asynctask_state; NULL: no filter).
-- Then the byte budget: rows come while their data's running total stays within $8 bytes (the
-- first always); sizes are measured first, so data past the budget is never read out nor sent.
-- After a page that was cut short (by $5 or by $8), one more row comes with NULL data: it only
-- says that a next page exists.
-- params: $1 text[] (stored states, running excluded), $2 smallint[] (priorities), $3 text (type), $4 bigint (before id), $5 int (limit), $6 bool (running too), $7 text (state as shown), $8 bigint (byte budget)
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
            AND ($7::text IS NULL OR asynctask_state(t.state, t.scheduled_at) = $7::text)
        ORDER BY t.id DESC LIMIT $5
    ) AS p
    UNION ALL
    SELECT id FROM tasks
    WHERE state = 'running' AND $6::bool AND priority = ANY($2::smallint[])
        AND ($3::text IS NULL OR type = $3::text) AND ($4::bigint IS NULL OR id < $4::bigint)
), chosen AS (
    SELECT id FROM page ORDER BY id DESC LIMIT $5
), fitted AS (
    SELECT t.id, row_number() OVER w = 1 OR sum(octet_length(t.data::text)) OVER w <= $8::bigint
        AS fits
    FROM chosen JOIN tasks AS t ON t.id = chosen.id
    WINDOW w AS (ORDER BY t.id DESC)
), shown AS (
    SELECT id, fits, lag(fits, 1, true) OVER (ORDER BY id DESC) AS shown FROM fitted
)
SELECT t.id, t.type, t.priority, asynctask_state(t.state, t.scheduled_at) AS state, t.attempts,
    t.max_attempts, CASE WHEN shown.fits THEN t.data::text END AS data, t.scheduled_at,
    t.inserted_at, t.updated_at, t.started_at, t.finished_at, t.last_error, t.unique_key
FROM shown JOIN tasks AS t ON t.id = shown.id
WHERE shown.shown
ORDER BY t.id DESC;


-- name: cancel_task
-- Cancel a task whose state is one of $2 (models.CANCELLABLE_STATES); no row if it is not. A
-- running task ends here too: its worker's outcome is never written (finish requires `running`
-- and the claim's token, both gone), and tasks_cancel tells that worker, by its locked_by, to
-- stop the handler (workers/cancels.py). `was` is the state before. Its waiters hear of it on
-- tasks_finished, as from `finish`.
-- params: $1 bigint (id), $2 text[] (states it may be in)
WITH target AS (
    SELECT id, state, locked_by FROM tasks WHERE id = $1 AND state = ANY($2::text[]) FOR UPDATE
)
UPDATE tasks AS t SET state = 'cancelled', finished_at = now(), updated_at = now(),
    locked_by = NULL, lock_token = NULL, lease_expires_at = NULL
FROM target WHERE t.id = target.id
RETURNING t.id, t.type, t.priority, t.state, t.attempts, t.max_attempts, t.data::text AS data,
    t.scheduled_at, t.inserted_at, t.updated_at, t.started_at, t.finished_at, t.last_error,
    t.unique_key, asynctask_state(target.state, t.scheduled_at) AS was,
    CASE WHEN target.state = 'running'
        THEN pg_notify('tasks_cancel', t.id || ' ' || coalesce(target.locked_by, '')) END
        AS notified,
    pg_notify('tasks_finished', t.id::text) AS finished;


-- name: retry_task
-- Make a task whose state is one of $2 (models.RETRYABLE_STATES) due now with a fresh attempt
-- budget, and wake its pool; no row if it is in another state.
-- params: $1 bigint (id), $2 text[] (states it may be in)
UPDATE tasks SET state = 'available', attempts = 0, scheduled_at = now(), finished_at = NULL,
    started_at = NULL, updated_at = now()
WHERE id = $1 AND state = ANY($2::text[])
RETURNING id, type, priority, asynctask_state(state, scheduled_at) AS state, attempts,
    max_attempts, data::text AS data, scheduled_at, inserted_at, updated_at, started_at,
    finished_at, last_error, unique_key,
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


-- name: finish (prepared)
-- Write many decisions (lifecycle.decide) in one statement; each applies only while the task is
-- still running under the claim token it names, so a worker whose claim was rescued and taken
-- over can never overwrite the newer claim's outcome. A NULL delay keeps the task's place in the
-- queue (a hand-back); `uncharge` gives back the attempt the claim counted. $7 holds completions'
-- return values as JSON text (results). $6 and $7 are NULL for a batch with no error or no result
-- (unnest pads them with NULLs), so the common batch sends neither. The arrays arrive as literals
-- ('{1,2}', core/arrays.py), not as ARRAY[...] of one constant per element. Then ONE NOTIFY per statement, not per
-- row, on tasks_finished with the ids that reached a final state, for the API's
-- GET /api/tasks/{id}?wait_seconds=N (service/waiters.py): asynctask_notify_finished (schema.sql)
-- sends it only while an API process listens for it; nothing when no task finished.
-- params: $1 bigint[] (ids), $2 uuid[] (tokens), $3 text[] (states), $4 int[] (delays, ms), $5 bool[] (uncharge), $6 text[] (errors), $7 text[] (results)
WITH written AS (
    UPDATE tasks AS t SET state = o.state,
        attempts = t.attempts - o.uncharge::int,
        scheduled_at = CASE WHEN o.delay_ms IS NULL THEN t.scheduled_at
            ELSE now() + o.delay_ms * interval '1 millisecond' END,
        finished_at = CASE WHEN o.state IN ('completed', 'failed', 'cancelled') THEN now() END,
        started_at = CASE WHEN o.uncharge THEN NULL ELSE t.started_at END,
        last_error = coalesce(o.error, t.last_error),
        result = o.result::jsonb,
        locked_by = NULL, lock_token = NULL, lease_expires_at = NULL, updated_at = now()
    FROM unnest($1::bigint[], $2::uuid[], $3::text[], $4::int[], $5::bool[], $6::text[],
        $7::text[]) AS o(id, token, state, delay_ms, uncharge, error, result)
    -- `state || ''`: the same test in a form tasks_running_idx cannot serve, so the rows are
    -- found by id. With statistics from before the tasks ran (the running index looks empty) the
    -- planner read every running task through that index for each finish: 7.5-9 ms for 100
    -- outcomes beside 20,000 running tasks, 1.1 ms by id (bench/README.md).
    WHERE t.id = o.id AND t.lock_token = o.token AND t.state || '' = 'running'
    RETURNING t.id, o.state IN ('completed', 'failed', 'cancelled') AS final
), finished AS (
    SELECT string_agg(id::text, ',') AS ids FROM written WHERE final
), notified AS (
    SELECT asynctask_notify_finished(ids) AS sent FROM finished WHERE ids IS NOT NULL
)
SELECT (SELECT count(*) FROM written) AS written,
    coalesce((SELECT sent FROM notified), false) AS notified;


-- name: extend_leases
-- Push the lease of those of tasks $1 still held under one of the claim tokens $2. Found by id
-- (the primary key): every task passes through running, so until a vacuum tasks_running_idx holds
-- an entry for each task run since, and a bitmap scan of it by token (which marks none of them
-- dead) read the rows of all that no other scan had marked: 0.2-0.4 s a call after a million.
-- The running test is written as in `finish` for the same reason: no plan through that index.
-- params: $1 bigint[] (task ids), $2 uuid[] (tokens), $3 float8 (lease seconds)
UPDATE tasks SET lease_expires_at = now() + $3 * interval '1 second'
WHERE id = ANY($1::bigint[]) AND state || '' = 'running' AND lock_token = ANY($2::uuid[]);


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
-- Delete up to $3 tasks in state $1 that finished more than $2 days ago, oldest first: a range
-- of tasks_finished_idx, so a try that finds nothing reads a few index pages.
-- params: $1 text (state), $2 float8 (days), $3 int (limit)
DELETE FROM tasks WHERE id IN (
    SELECT id FROM tasks
    WHERE state = $1 AND finished_at < now() - $2 * interval '1 day'
    ORDER BY finished_at
    LIMIT $3
);


-- name: register_result_listener
-- Record this connection (an API's wait-for-result listener, already LISTENing) as a reader of
-- tasks_finished, and forget listeners whose backend is gone. Holds the fence lock $1 exclusively
-- to the commit: finishes in flight (they hold it shared) commit first, and later ones read the
-- row (asynctask_notify_finished, schema.sql).
-- params: $1 bigint (fence lock)
WITH fence AS (
    SELECT pg_advisory_xact_lock($1)
), forgotten AS (
    DELETE FROM result_listeners
    WHERE pid <> pg_backend_pid() AND pid NOT IN (SELECT pid FROM pg_stat_activity)
)
INSERT INTO result_listeners (pid) SELECT pg_backend_pid() FROM fence
ON CONFLICT (pid) DO UPDATE SET since = now();


-- name: unregister_result_listener
-- This connection no longer listens for finished tasks (an API stopping).
DELETE FROM result_listeners WHERE pid = pg_backend_pid();


-- name: forget_dead_result_listeners
-- Result listeners whose backend is gone (an API that died): finishes stop notifying for them.
DELETE FROM result_listeners WHERE pid NOT IN (SELECT pid FROM pg_stat_activity);


-- name: try_lock
-- Take a session advisory lock if it is free (one pruner at a time across all supervisors).
-- params: $1 bigint (key)
SELECT pg_try_advisory_lock($1) AS locked;


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


-- name: vacuum_settings
-- Whether the server vacuums by itself: autovacuum needs both settings on (checked at start).
SELECT name, setting FROM pg_settings WHERE name IN ('autovacuum', 'track_counts');


-- === first hour (issue 11): which priorities have a live worker ====================

-- name: live_workers
-- Worker processes alive now, per priority, from every host: those of the registry (`workers`,
-- the dashboard's) whose heartbeat is at most $1 seconds old. heartbeats.live_workers is the only caller.
-- params: $1 float8 (dead after, seconds)
SELECT priority, count(*)::int AS workers
FROM workers
WHERE heartbeat_at >= now() - $1 * interval '1 second'
GROUP BY priority;


-- name: due_priorities
-- The priorities in $1 with at least one due task: one probe of tasks_due_idx each.
-- params: $1 smallint[] (priorities)
SELECT p.priority FROM unnest($1::smallint[]) AS p(priority)
WHERE EXISTS (
    SELECT 1 FROM tasks
    WHERE state IN ('available', 'retrying') AND priority = p.priority AND scheduled_at <= now()
);


-- === Producer features (issue 13): unique keys, Idempotency-Key, the scheduled-task timer ===


-- name: insert_unique (prepared)
-- Create tasks of which some carry a unique_key or an Idempotency-Key (else insert_many does).
-- A unique_key held by an unfinished task of the same type inserts nothing (the partial unique
-- index decides; a key repeated within the input inserts its first item only): those items are
-- absent from the answer, and the caller looks their task up (find_unique). Ids are drawn before
-- the insert so that each new row is matched to its input item ($n order, the `n` column), and so
-- that an item with an Idempotency-Key gets its answer row (201, its task) in this same statement:
-- a twin request committed meanwhile makes the statement fail on that row's primary key. NOTIFYs
-- as insert_many does.
-- params: $1 text[] (types), $2 smallint[] (priorities), $3 int[] (max_attempts), $4 jsonb[] (data), $5 timestamptz[] (scheduled_at), $6 float8[] (delay seconds), $7 text[] (unique keys), $8 text[] (key scopes), $9 text[] (idempotency keys), $10 text[] (request fingerprints)
WITH input AS (
    SELECT i.*, nextval((SELECT pg_get_serial_sequence('tasks', 'id'))) AS id
    FROM unnest($1::text[], $2::smallint[], $3::int[], $4::jsonb[], $5::timestamptz[],
        $6::float8[], $7::text[], $8::text[], $9::text[], $10::text[])
        WITH ORDINALITY AS i(type, priority, max_attempts, data, at, delay, unique_key, scope,
            key, fingerprint, n)
), inserted AS (
    INSERT INTO tasks (id, type, priority, max_attempts, data, scheduled_at, unique_key)
    SELECT id, type, priority, max_attempts, data,
        greatest(coalesce(at, now() + delay * interval '1 second'), now()), unique_key
    FROM input ORDER BY n
    ON CONFLICT (type, unique_key)
        WHERE unique_key IS NOT NULL AND state IN ('available', 'running', 'retrying')
        DO NOTHING
    RETURNING id, type, priority, asynctask_state(state, scheduled_at) AS state, attempts,
        max_attempts, scheduled_at, inserted_at, updated_at, started_at, finished_at, last_error,
        unique_key
), remembered AS (
    INSERT INTO idempotency_keys (scope, key, fingerprint, status, task_ids)
    SELECT i.scope, i.key, i.fingerprint, 201, ARRAY[i.id]
    FROM input AS i JOIN inserted USING (id)
    WHERE i.key IS NOT NULL
), notified AS (
    SELECT pg_notify(asynctask_channel(priority),
        CASE WHEN count(*) = 1 THEN min(id)::text ELSE '' END)
    FROM inserted WHERE scheduled_at <= now() GROUP BY priority
    UNION ALL
    SELECT pg_notify(asynctask_channel(priority), asynctask_at(scheduled_at,
        CASE WHEN count(*) = 1 THEN min(id)::text ELSE '*' END))
    FROM (
        SELECT priority, id, scheduled_at,
            min(scheduled_at) OVER (PARTITION BY priority) AS earliest
        FROM inserted WHERE scheduled_at > now()
    ) AS later
    WHERE scheduled_at = earliest GROUP BY priority, scheduled_at
)
SELECT input.n, inserted.*
FROM inserted JOIN input USING (id), (SELECT count(*) FROM notified) AS notes
ORDER BY id;


-- name: find_unique
-- The unfinished tasks holding these (type, unique_key) pairs: what a duplicate create answers.
-- A statement of its own, so it sees a holder committed after the insert's snapshot was taken.
-- params: $1 text[] (types), $2 text[] (unique keys)
SELECT id, type, priority, asynctask_state(state, scheduled_at) AS state, attempts, max_attempts,
    data::text AS data, scheduled_at, inserted_at, updated_at, started_at, finished_at, last_error,
    unique_key
FROM tasks
WHERE (type, unique_key) IN (SELECT * FROM unnest($1::text[], $2::text[]))
    AND unique_key IS NOT NULL AND state IN ('available', 'running', 'retrying');


-- name: remember_answer
-- Keep the first answer to a request made with an Idempotency-Key, for 24 hours (the column's
-- default). A row already there (a twin, committed) makes this fail on the primary key.
-- params: $1 text (scope), $2 text (key), $3 text (fingerprint), $4 smallint (status), $5 bigint[] (task ids), $6 int[] (duplicate items)
INSERT INTO idempotency_keys (scope, key, fingerprint, status, task_ids, duplicates)
VALUES ($1, $2, $3, $4, $5, $6);


-- name: remembered_answer
-- The stored answer for a key, and whether it is still in force.
-- params: $1 text (scope), $2 text (key)
SELECT fingerprint, status, task_ids, duplicates, expires_at > now() AS live
FROM idempotency_keys WHERE scope = $1 AND key = $2;


-- name: forget_expired_answer
-- Drop a key's answer once it has expired (before its key is used again).
-- params: $1 text (scope), $2 text (key)
DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND expires_at <= now();


-- name: prune_idempotency_keys
-- Delete up to $1 expired Idempotency-Key answers (idempotency_keys_expires_idx).
-- params: $1 int (limit)
DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM idempotency_keys WHERE expires_at <= now() LIMIT $1
));


-- name: unique_key_holder
-- The unfinished task holding a (type, unique_key), if any: why a manual retry was refused.
-- params: $1 text (type), $2 text (unique key)
SELECT id, asynctask_state(state, scheduled_at) AS state FROM tasks
WHERE type = $1 AND unique_key = $2 AND unique_key IS NOT NULL
    AND state IN ('available', 'running', 'retrying');


-- name: next_due (prepared)
-- A pool leader's timer (workers/due.py): seconds until the earliest task of priority $1 that
-- is due later than $2 seconds ago (negative: due already; NULL: none), whether a second task is
-- due at that same instant (then the leader wakes its siblings too), and the server's clock
-- (epoch seconds). Reads two entries of tasks_due_idx. The leader passes the time since its last
-- claim began, so a task that became due after that claim is found here and claimed at once,
-- while one the claim skipped (locked by another worker) is not waited for again.
-- params: $1 smallint (priority), $2 float8 (seconds)
WITH next AS (
    SELECT scheduled_at FROM tasks
    WHERE state IN ('available', 'retrying') AND priority = $1
        AND scheduled_at > now() - $2 * interval '1 second'
    ORDER BY scheduled_at
    LIMIT 2
)
SELECT extract(epoch FROM min(scheduled_at) - clock_timestamp())::float8 AS due_in,
    count(*) = 2 AND min(scheduled_at) = max(scheduled_at) AS together,
    extract(epoch FROM clock_timestamp())::float8 AS clock
FROM next;


-- name: scheduled_counts
-- Per priority in $1: how many tasks are scheduled (stored available, due later). Reads only the
-- future end of tasks_due_idx (and those rows), never the whole table.
-- params: $1 smallint[] (priorities)
SELECT p.priority, (
    SELECT count(*) FROM tasks
    WHERE state IN ('available', 'retrying') AND priority = p.priority
        AND scheduled_at > now() AND state = 'available'
) AS tasks
FROM unnest($1::smallint[]) AS p(priority);


-- --- h/run: cancelling running tasks, periodic tasks ----------------------------------------------


-- name: still_held
-- Whether a worker still holds a running task under its claim token: false once the task was
-- cancelled (or rescued by another worker). The backstop of workers/cancels.py, for long runs.
-- The running test is written as in `finish`: found by id, never through tasks_running_idx.
-- params: $1 bigint (id), $2 uuid (token)
SELECT EXISTS (
    SELECT 1 FROM tasks WHERE id = $1 AND lock_token = $2 AND state || '' = 'running'
) AS held;


-- name: register_schedules
-- Give each named schedule not seen before a cursor at the database's now: its first tick after
-- now is the first it runs (nothing is back-filled for a new schedule). Answers the clock.
-- params: $1 text[] (names)
WITH added AS (
    INSERT INTO schedule_state (name, last_tick_at)
    SELECT name, now() FROM unnest($1::text[]) AS name
    ON CONFLICT (name) DO NOTHING
    RETURNING name
)
SELECT now() AS now, (SELECT count(*) FROM added) AS added;


-- name: schedule_states
-- The cursor of each named schedule: the last tick it enqueued (or when it was first seen) and
-- the task that tick made (NULL before its first run).
-- params: $1 text[] (names)
SELECT name, last_tick_at, last_task_id FROM schedule_state WHERE name = ANY($1::text[]);


-- name: fire_schedule
-- Enqueue a schedule's ticks: of the instants in $2 (oldest first), those after its cursor and not
-- after the database's clock become one task each (scheduled_at = the tick), and the cursor moves
-- to the last of them, in one statement. The cursor row's lock makes racing schedulers take
-- turns; the later one finds the cursor moved and inserts nothing, so each tick makes one task
-- however many supervisors run, and a scheduler whose clock runs ahead makes nothing early. The
-- cursor only moves forward: a tick passed over (catch-up) can never be enqueued later. Answers
-- the cursor as it was, where it moved (NULL: nothing was due), and the database's clock.
-- params: $1 text (name), $2 timestamptz[] (ticks), $3 text (type), $4 smallint (priority), $5 int (max_attempts), $6 jsonb (data)
WITH cur AS (
    SELECT name, last_tick_at FROM schedule_state WHERE name = $1 FOR UPDATE
), fired AS (
    INSERT INTO tasks (type, priority, max_attempts, data, scheduled_at)
    SELECT $3, $4, $5, $6, tick
    FROM cur, unnest($2::timestamptz[]) AS tick
    WHERE tick > cur.last_tick_at AND tick <= now()
    ORDER BY tick
    RETURNING id, priority, scheduled_at
), moved AS (
    UPDATE schedule_state AS s SET last_tick_at = f.tick, last_task_id = f.id, updated_at = now()
    FROM (SELECT max(scheduled_at) AS tick, max(id) AS id FROM fired) AS f
    WHERE s.name = $1 AND f.tick IS NOT NULL
    RETURNING s.last_tick_at
), notified AS (
    SELECT pg_notify(asynctask_channel(priority),
        CASE WHEN count(*) = 1 THEN min(id)::text ELSE '' END)
    FROM fired GROUP BY priority
)
SELECT (SELECT last_tick_at FROM cur) AS was, (SELECT last_tick_at FROM moved) AS moved_to,
    (SELECT count(*) FROM notified) AS notified, now() AS now;


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
-- Cancel, in one statement, every task in one of the stored states $1 (core/bulk.py: never
-- running) matching the optional priority, type and state as shown ($4: scheduled or available,
-- both stored available); how many. Waiters of the cancelled tasks hear of it on tasks_finished
-- (an empty payload: each reads its task again). Run inline: the planner folds the NULL tests
-- and takes the ranges of tasks_list_idx.
-- params: $1 text[] (states), $2 smallint (priority), $3 text (type), $4 text (state as shown)
WITH cancelled AS (
    UPDATE tasks SET state = 'cancelled', finished_at = now(), updated_at = now()
    WHERE state = ANY($1::text[]) AND state <> 'running'
        AND ($2::smallint IS NULL OR priority = $2::smallint)
        AND ($3::text IS NULL OR type = $3::text)
        AND ($4::text IS NULL OR asynctask_state(state, scheduled_at) = $4::text)
    RETURNING 1
)
SELECT count(*) AS tasks,
    CASE WHEN count(*) > 0 THEN pg_notify('tasks_finished', '') END AS notified
FROM cancelled;


-- name: bulk_retry
-- As retry_task for every task in one of the states $1 (models.RETRYABLE_STATES, or the one asked
-- for) matching the optional priority and type, in one statement; one NOTIFY per priority touched
-- (an empty payload: wake the pool). How many, per priority. A task whose unique_key an
-- unfinished task holds is left as it is (as retry_task refuses it), and of several with one key
-- only the newest is retried: the unique index would refuse the others.
-- params: $1 text[] (states), $2 smallint (priority), $3 text (type)
WITH candidates AS (
    SELECT t.id, t.type, t.unique_key FROM tasks AS t
    WHERE t.state = ANY($1::text[])
        AND ($2::smallint IS NULL OR t.priority = $2::smallint)
        AND ($3::text IS NULL OR t.type = $3::text)
        AND (t.unique_key IS NULL OR NOT EXISTS (
            SELECT 1 FROM tasks AS u
            WHERE u.type = t.type AND u.unique_key = t.unique_key
                AND u.state IN ('available', 'running', 'retrying')
        ))
), picked AS (
    SELECT id FROM candidates WHERE unique_key IS NULL
    UNION ALL
    (SELECT DISTINCT ON (type, unique_key) id FROM candidates
     WHERE unique_key IS NOT NULL ORDER BY type, unique_key, id DESC)
), retried AS (
    UPDATE tasks AS t SET state = 'available', attempts = 0, scheduled_at = now(),
        finished_at = NULL, started_at = NULL, updated_at = now()
    FROM picked WHERE t.id = picked.id
    RETURNING t.priority
)
SELECT priority, count(*) AS tasks, pg_notify(asynctask_channel(priority), '') AS notified
FROM retried GROUP BY priority;


-- name: count_scheduled
-- How many tasks are scheduled (stored available, due later), of the optional priority and type:
-- the future end of tasks_due_idx (and those rows when a type is asked for).
-- params: $1 smallint (priority), $2 text (type)
SELECT count(*) AS tasks FROM tasks
WHERE state IN ('available', 'retrying') AND state = 'available' AND scheduled_at > now()
    AND ($1::smallint IS NULL OR priority = $1::smallint)
    AND ($2::text IS NULL OR type = $2::text);
