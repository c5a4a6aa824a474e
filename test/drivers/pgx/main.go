// Command pgx-driver drives a Postgres server (normally through the Tidepool gateway)
// with many concurrent pgx connections, each on its own pgx.Connect session with pgx's
// default QueryExecModeCacheStatement: every parameterized query is prepared once per
// session as a named statement ("stmtcache_<hash of the text>") and executed by name
// from then on. That is exactly what a transaction pooler with transparent
// protocol-level prepared statements must get right: the same statement name with the
// same text in every session, distinct names for per-session texts, pipelined batches,
// and transactions that must stay on one backend.
//
// Environment:
//
//	DATABASE_URL  connection string (required)
//	CLIENTS       concurrent connections (default 100)
//	ITERATIONS    iterations per connection (default 30)
//
// Every result is checked against what that client alone should see. On any error or
// mismatch the program prints every problem to stderr and exits 1; on success it prints
// one line of JSON, {"clients":N,"iterations":M,"queries":Q}, and exits 0.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// The text every client uses: one statement name shared by all sessions.
const sharedCountSQL = "SELECT count(*) FROM pgx_items WHERE owner = $1"

// Rolled-back rows carry n = rolledBackBase + iteration; committed rows n = iteration.
const rolledBackBase = 1_000_000

// Overall deadline: a stuck gateway shows up as a failure, not a hang.
const runTimeout = 4 * time.Minute

var queries atomic.Int64

func envInt(name string, def int) (int, error) {
	raw := os.Getenv(name)
	if raw == "" {
		return def, nil
	}
	v, err := strconv.Atoi(raw)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("%s must be a positive integer, got %q", name, raw)
	}
	return v, nil
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "pgx-driver: "+format+"\n", args...)
	os.Exit(1)
}

// queryRow runs a single-row query, counts it and scans into dest.
func queryRow(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, sql string, args []any, dest ...any) error {
	queries.Add(1)
	if err := q.QueryRow(ctx, sql, args...).Scan(dest...); err != nil {
		return fmt.Errorf("%q: %w", sql, err)
	}
	return nil
}

func expect[T comparable](what string, got, want T) error {
	if got != want {
		return fmt.Errorf("%s: got %v, want %v", what, got, want)
	}
	return nil
}

type client struct {
	id         int
	conn       *pgx.Conn
	ownSQL     string // text only this client uses: a statement name only its session has
	iterations int
}

func (c *client) sum(ctx context.Context, iter int) error {
	var s int32
	if err := queryRow(ctx, c.conn, "SELECT $1::int + $2::int", []any{c.id, iter}, &s); err != nil {
		return err
	}
	return expect("sum", int(s), c.id+iter)
}

func (c *client) sharedCount(ctx context.Context, want int) error {
	var n int64
	if err := queryRow(ctx, c.conn, sharedCountSQL, []any{c.id}, &n); err != nil {
		return err
	}
	return expect("committed rows (shared statement)", int(n), want)
}

func (c *client) own(ctx context.Context, iter int) error {
	var s string
	if err := queryRow(ctx, c.conn, c.ownSQL, []any{fmt.Sprintf("it%d", iter)}, &s); err != nil {
		return err
	}
	return expect("per-client statement", s, fmt.Sprintf("it%d-client-%d", iter, c.id))
}

func (c *client) commit(ctx context.Context, iter int) error {
	tx, err := c.conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after Commit
	queries.Add(1)
	if _, err := tx.Exec(ctx, "INSERT INTO pgx_items (owner, n) VALUES ($1, $2)", c.id, iter); err != nil {
		return fmt.Errorf("insert: %w", err)
	}
	// Inside the transaction the new row is visible: same backend as the INSERT.
	var n int64
	if err := queryRow(ctx, tx, sharedCountSQL, []any{c.id}, &n); err != nil {
		return err
	}
	if err := expect("rows inside the transaction", int(n), iter+1); err != nil {
		return err
	}
	queries.Add(1)
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

func (c *client) rollback(ctx context.Context, iter int) error {
	tx, err := c.conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	queries.Add(1)
	if _, err := tx.Exec(ctx, "INSERT INTO pgx_items (owner, n) VALUES ($1, $2)", c.id, rolledBackBase+iter); err != nil {
		_ = tx.Rollback(ctx)
		return fmt.Errorf("insert (to roll back): %w", err)
	}
	var n int64
	if err := queryRow(ctx, tx, sharedCountSQL, []any{c.id}, &n); err != nil {
		_ = tx.Rollback(ctx)
		return err
	}
	if err := expect("rows inside the rolled-back transaction", int(n), iter+2); err != nil {
		_ = tx.Rollback(ctx)
		return err
	}
	queries.Add(1)
	if err := tx.Rollback(ctx); err != nil {
		return fmt.Errorf("rollback: %w", err)
	}
	return nil
}

// batch pipelines three queries (prepares for new texts, then Bind/Execute x3, one Sync).
func (c *client) batch(ctx context.Context, iter int) error {
	b := &pgx.Batch{}
	b.Queue("SELECT $1::int * 3", iter)
	b.Queue(c.ownSQL, fmt.Sprintf("b%d", iter))
	b.Queue(sharedCountSQL, c.id)
	queries.Add(3)
	br := c.conn.SendBatch(ctx, b)
	var x int32
	var y string
	var z int64
	errs := []error{
		br.QueryRow().Scan(&x),
		br.QueryRow().Scan(&y),
		br.QueryRow().Scan(&z),
		br.Close(),
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("batch: %w", err)
	}
	return errors.Join(
		expect("batch[0]", int(x), iter*3),
		expect("batch[1]", y, fmt.Sprintf("b%d-client-%d", iter, c.id)),
		expect("batch[2] committed rows", int(z), iter+1),
	)
}

// modes runs the other extended-protocol query modes once: unnamed statements with and
// without a Describe round trip, and the description cache.
func (c *client) modes(ctx context.Context, iter int) error {
	var a, b, d int32
	if err := queryRow(ctx, c.conn, "SELECT $1::int * 7", []any{pgx.QueryExecModeDescribeExec, c.id}, &a); err != nil {
		return fmt.Errorf("describe-exec: %w", err)
	}
	if err := queryRow(ctx, c.conn, "SELECT $1::int * 11", []any{pgx.QueryExecModeExec, c.id}, &b); err != nil {
		return fmt.Errorf("exec: %w", err)
	}
	if err := queryRow(ctx, c.conn, "SELECT $1::int * 13", []any{pgx.QueryExecModeCacheDescribe, c.id}, &d); err != nil {
		return fmt.Errorf("cache-describe: %w", err)
	}
	var s string
	if err := queryRow(ctx, c.conn, "SELECT $1::text || $2::text", []any{pgx.QueryExecModeSimpleProtocol, "simple-", strconv.Itoa(iter)}, &s); err != nil {
		return fmt.Errorf("simple-protocol: %w", err)
	}
	return errors.Join(
		expect("describe-exec", int(a), c.id*7),
		expect("exec", int(b), c.id*11),
		expect("cache-describe", int(d), c.id*13),
		expect("simple-protocol", s, fmt.Sprintf("simple-%d", iter)),
	)
}

func (c *client) run(ctx context.Context) error {
	steps := []struct {
		name string
		fn   func(context.Context, int) error
	}{
		{"sum", c.sum},
		{"shared", func(ctx context.Context, iter int) error { return c.sharedCount(ctx, iter) }},
		{"own", c.own},
		{"commit", c.commit},
		{"rollback", c.rollback},
		{"batch", c.batch},
	}
	for iter := 0; iter < c.iterations; iter++ {
		for _, step := range steps {
			if err := step.fn(ctx, iter); err != nil {
				return fmt.Errorf("client %d iteration %d %s: %w", c.id, iter, step.name, err)
			}
		}
		if iter == c.iterations/2 {
			if err := c.modes(ctx, iter); err != nil {
				return fmt.Errorf("client %d iteration %d modes: %w", c.id, iter, err)
			}
		}
	}
	// The session's own view of the end state.
	if err := c.sharedCount(ctx, c.iterations); err != nil {
		return fmt.Errorf("client %d final: %w", c.id, err)
	}
	return nil
}

func setup(ctx context.Context, url string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("setup connect: %w", err)
	}
	defer conn.Close(ctx)
	for _, sql := range []string{
		"CREATE TABLE IF NOT EXISTS pgx_items (owner int, n int)",
		"TRUNCATE pgx_items",
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			return fmt.Errorf("setup %q: %w", sql, err)
		}
	}
	return nil
}

// verify checks the end state on a fresh connection: exactly `iterations` committed
// rows per client, n = 0..iterations-1 each once, and no rolled-back row.
func verify(ctx context.Context, url string, clients, iterations int) []error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return []error{fmt.Errorf("verify connect: %w", err)}
	}
	defer conn.Close(ctx)
	var problems []error
	rows, err := conn.Query(ctx, `SELECT owner, count(*), count(DISTINCT n), min(n), max(n)
		FROM pgx_items WHERE n < $1 GROUP BY owner ORDER BY owner`, rolledBackBase)
	if err != nil {
		return []error{fmt.Errorf("verify query: %w", err)}
	}
	seen := make(map[int]bool)
	for rows.Next() {
		var owner int32
		var count, distinct int64
		var lo, hi int32
		if err := rows.Scan(&owner, &count, &distinct, &lo, &hi); err != nil {
			return append(problems, fmt.Errorf("verify scan: %w", err))
		}
		seen[int(owner)] = true
		if owner < 0 || int(owner) >= clients {
			problems = append(problems, fmt.Errorf("rows for unknown owner %d", owner))
			continue
		}
		if int(count) != iterations || int(distinct) != iterations || lo != 0 || int(hi) != iterations-1 {
			problems = append(problems, fmt.Errorf(
				"client %d committed rows: count %d, distinct %d, n in [%d, %d]; want %d rows n = 0..%d",
				owner, count, distinct, lo, hi, iterations, iterations-1))
		}
	}
	if err := rows.Err(); err != nil {
		problems = append(problems, fmt.Errorf("verify rows: %w", err))
	}
	for i := 0; i < clients; i++ {
		if !seen[i] {
			problems = append(problems, fmt.Errorf("client %d has no committed rows", i))
		}
	}
	var rolledBack int64
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pgx_items WHERE n >= $1", rolledBackBase).Scan(&rolledBack); err != nil {
		problems = append(problems, fmt.Errorf("verify rolled back: %w", err))
	} else if rolledBack != 0 {
		problems = append(problems, fmt.Errorf("%d rolled-back rows are visible", rolledBack))
	}
	return problems
}

func main() {
	url := os.Getenv("DATABASE_URL")
	if url == "" {
		fail("DATABASE_URL is not set")
	}
	clients, err := envInt("CLIENTS", 100)
	if err != nil {
		fail("%v", err)
	}
	iterations, err := envInt("ITERATIONS", 30)
	if err != nil {
		fail("%v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()

	if err := setup(ctx, url); err != nil {
		fail("%v", err)
	}

	// Connect everyone first, so all sessions are open at once.
	conns := make([]*pgx.Conn, clients)
	connErrs := make([]error, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conns[i], connErrs[i] = pgx.Connect(ctx, url)
		}()
	}
	wg.Wait()
	var problems []error
	for i, err := range connErrs {
		if err != nil {
			problems = append(problems, fmt.Errorf("client %d connect: %w", i, err))
		}
	}
	closeAll := func() {
		for _, conn := range conns {
			if conn != nil {
				conn.Close(context.Background())
			}
		}
	}
	if len(problems) > 0 {
		closeAll()
		report(problems)
	}

	runErrs := make([]error, clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &client{
				id:         i,
				conn:       conns[i],
				ownSQL:     fmt.Sprintf("SELECT $1::text || '-client-%d'", i),
				iterations: iterations,
			}
			runErrs[i] = c.run(ctx)
		}()
	}
	wg.Wait()
	closeAll()
	for _, err := range runErrs {
		if err != nil {
			problems = append(problems, err)
		}
	}
	if len(problems) > 0 {
		report(problems)
	}
	if problems := verify(ctx, url, clients, iterations); len(problems) > 0 {
		report(problems)
	}

	out, _ := json.Marshal(map[string]int{
		"clients":    clients,
		"iterations": iterations,
		"queries":    int(queries.Load()),
	})
	fmt.Println(string(out))
}

// report prints every problem (the first 50 in full) and exits 1.
func report(problems []error) {
	const shown = 50
	for i, p := range problems {
		if i == shown {
			fmt.Fprintf(os.Stderr, "pgx-driver: ... and %d more\n", len(problems)-shown)
			break
		}
		fmt.Fprintf(os.Stderr, "pgx-driver: %v\n", p)
	}
	os.Exit(1)
}
