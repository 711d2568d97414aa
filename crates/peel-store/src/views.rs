//! Views that answer an incident's first questions in one `SELECT * FROM v_...`: phase percentiles
//! per endpoint, the slowest connections, socket states and counter rates over time, connection
//! churn, and a baseline-vs-after comparison of the same metrics.
//!
//! They are re-created on every writable open (not versioned), and they read only the tables, so
//! they also work over an imported multi-host database. docs/schema.md describes their columns.

use duckdb::Connection;

/// Names of the views, in creation order (later views read earlier ones).
pub const VIEWS: &[&str] = &[
    "v_endpoint_phases",
    "v_slowest_connections",
    "v_socket_states",
    "v_counter_rates",
    "v_churn",
    "v_run_metrics",
    "v_run_compare",
];

const CREATE_VIEWS: &str = r#"
CREATE OR REPLACE MACRO peel_endpoint(ip, port) AS
    CASE WHEN contains(ip, ':') THEN '[' || ip || ']:' || port ELSE ip || ':' || port END;

CREATE OR REPLACE VIEW v_endpoint_phases AS
WITH connection_phases AS (
    SELECT run_id, host, stage, peel_endpoint(server_ip, server_port) AS endpoint,
           regexp_replace(phase, '_us$', '') AS phase, value_us
    FROM connections
    UNPIVOT (value_us FOR phase IN
        (handshake_us, request_wait_us, db_setup_us, idle_us, close_us, lifetime_us))
),
exchange_phases AS (
    SELECT run_id, host, stage, endpoint, regexp_replace(phase, '_us$', '') AS phase, value_us
    FROM (
        SELECT e.run_id, e.host, e.stage, peel_endpoint(c.server_ip, c.server_port) AS endpoint,
               e.server_us, e.response_us
        FROM exchanges e
        JOIN connections c USING (run_id, host, stage, conn_id)
    )
    UNPIVOT (value_us FOR phase IN (server_us, response_us))
),
phases AS (
    SELECT * FROM connection_phases UNION ALL SELECT * FROM exchange_phases
)
SELECT run_id, host, stage, endpoint, phase,
       count(*) AS samples,
       quantile_cont(value_us, 0.5) AS p50_us,
       quantile_cont(value_us, 0.9) AS p90_us,
       quantile_cont(value_us, 0.99) AS p99_us,
       max(value_us) AS max_us,
       avg(value_us) AS mean_us
FROM phases
GROUP BY run_id, host, stage, endpoint, phase;

CREATE OR REPLACE VIEW v_slowest_connections AS
SELECT * FROM (
    SELECT run_id, host, stage, peel_endpoint(server_ip, server_port) AS endpoint,
           conn_id, client_ip, client_port,
           make_timestamp_ns(first_ts_ns) AS first_ts,
           lifetime_us, handshake_us, request_wait_us, server_us, response_us, db_setup_us,
           idle_us, close_us, closed_by, reset_by, state, protocol, exchanges, retransmits,
           syn_retransmits,
           row_number() OVER (PARTITION BY run_id, host, stage, server_ip, server_port
                              ORDER BY lifetime_us DESC, conn_id) AS rank
    FROM connections
)
WHERE rank <= 10;

CREATE OR REPLACE VIEW v_socket_states AS
SELECT k.run_id, k.host, k.stage, k.snap_id, s.ts_ns, make_timestamp_ns(s.ts_ns) AS ts,
       k.state, count(*) AS sockets,
       count(DISTINCT k.local_port) FILTER (WHERE k.state = 'LISTEN') AS listen_ports,
       sum(k.recv_q_bytes) AS recv_q_bytes, sum(k.send_q_bytes) AS send_q_bytes
FROM sockets k
JOIN snapshots s USING (run_id, host, stage, snap_id)
GROUP BY k.run_id, k.host, k.stage, k.snap_id, s.ts_ns, k.state;

CREATE OR REPLACE VIEW v_counter_rates AS
SELECT c.run_id, c.host, c.stage, c.snap_id, s.ts_ns, make_timestamp_ns(s.ts_ns) AS ts,
       c.name, c.value,
       c.value - lag(c.value) OVER w AS delta,
       (s.ts_ns - lag(s.ts_ns) OVER w) / 1e9 AS interval_s,
       c.rate_per_s
FROM tcp_counters c
JOIN snapshots s USING (run_id, host, stage, snap_id)
WINDOW w AS (PARTITION BY c.run_id, c.host, c.stage, c.name ORDER BY s.ts_ns);

CREATE OR REPLACE VIEW v_churn AS
WITH spans AS (
    SELECT run_id, host, stage, (max(last_ts_ns) - min(first_ts_ns)) / 1e9 AS window_s
    FROM connections
    GROUP BY run_id, host, stage
)
SELECT c.run_id, c.host, c.stage, peel_endpoint(c.server_ip, c.server_port) AS endpoint,
       any_value(c.protocol) AS protocol,
       count(*) AS connections,
       count(c.syn_ts_ns) AS new_connections,
       any_value(p.window_s) AS window_s,
       count(c.syn_ts_ns) / nullif(any_value(p.window_s), 0) AS new_conn_per_s,
       sum(c.exchanges) AS requests,
       sum(c.exchanges) / count(*) AS requests_per_conn,
       quantile_cont(c.handshake_us, 0.5) AS handshake_p50_us,
       quantile_cont(c.db_setup_us, 0.5) AS db_setup_p50_us,
       quantile_cont(c.close_us, 0.5) AS close_p50_us
FROM connections c
JOIN spans p USING (run_id, host, stage)
GROUP BY c.run_id, c.host, c.stage, c.server_ip, c.server_port;

CREATE OR REPLACE VIEW v_run_metrics AS
SELECT run_id, host, stage, endpoint, 'p50_' || phase || '_us' AS metric, p50_us AS value
FROM v_endpoint_phases
UNION ALL
SELECT run_id, host, stage, endpoint, 'p99_' || phase || '_us', p99_us FROM v_endpoint_phases
UNION ALL
SELECT run_id, host, stage, endpoint, 'new_conn_per_s', new_conn_per_s FROM v_churn
UNION ALL
SELECT run_id, host, stage, endpoint, 'requests_per_conn', requests_per_conn FROM v_churn
UNION ALL
SELECT run_id, host, stage, url_class, 'latency_p50_us',
       quantile_cont(latency_us, 0.5) FILTER (WHERE error_kind IS NULL)
FROM load_requests GROUP BY run_id, host, stage, url_class
UNION ALL
SELECT run_id, host, stage, url_class, 'latency_p99_us',
       quantile_cont(latency_us, 0.99) FILTER (WHERE error_kind IS NULL)
FROM load_requests GROUP BY run_id, host, stage, url_class
UNION ALL
SELECT run_id, host, stage, url_class, 'error_pct',
       100.0 * count(error_kind) / count(*)
FROM load_requests GROUP BY run_id, host, stage, url_class
UNION ALL
SELECT run_id, host, stage, url_class, 'requests_per_s',
       count(*) / nullif((max(end_ts_ns) - min(scheduled_ts_ns)) / 1e9, 0)
FROM load_requests GROUP BY run_id, host, stage, url_class
UNION ALL
SELECT run_id, host, stage, 'host', 'cpu_peak_pct', max(cpu_max_pct)
FROM system GROUP BY run_id, host, stage;

CREATE OR REPLACE VIEW v_run_compare AS
SELECT b.run_id AS baseline_run, b.stage AS baseline_stage,
       a.run_id AS after_run, a.stage AS after_stage,
       b.host AS baseline_host, a.host AS after_host,
       b.endpoint, b.metric,
       b.value AS baseline, a.value AS after,
       a.value - b.value AS change,
       100.0 * (a.value - b.value) / nullif(b.value, 0) AS change_pct
FROM v_run_metrics b
JOIN v_run_metrics a
  ON a.endpoint = b.endpoint AND a.metric = b.metric
 AND (a.run_id <> b.run_id OR a.stage <> b.stage OR a.host <> b.host);
"#;

/// Creates (or replaces) every view and the `peel_endpoint` macro.
pub(crate) fn create(connection: &Connection) -> duckdb::Result<()> {
    connection.execute_batch(CREATE_VIEWS)
}
