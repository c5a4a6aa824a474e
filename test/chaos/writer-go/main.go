// Command writer-go is the chaos suite's pgx v5 writer, with the same protocol as
// test/chaos/writer-node.ts: CONNECTIONS sessions (default 4), each a pgx.Connect of its
// own with pgx's default QueryExecModeCacheStatement (so the INSERT runs as a named
// prepared statement), write rows (writer, seq, note) into chaos with their own writer
// id (<WRITER>-<i>) and a seq that only goes up. Most writes are transactions (BEGIN;
// INSERT; pause; COMMIT, the pause 0-5 ms, sometimes 200-800 ms), some autocommit
// INSERTs, some a CALL chaos_write(...) that commits its INSERT and then sleeps before it
// replies. A write is acknowledged only when its INSERT reported one row and its COMMIT
// came back as COMMIT (or the autocommit INSERT succeeded, or the CALL came back as
// CALL); then it prints "ack\twriter\tseq\tkind". Any error prints
// "err\twriter\tseq\tstep\tcode\tmessage" and the write is given up; a closed connection
// is replaced.
//
// Runs until stdin closes, then prints "done\tname". Environment: DATABASE_URL, WRITER,
// CONNECTIONS.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

const insertSQL = "INSERT INTO chaos (writer, seq, note) VALUES ($1, $2, $3)"

// callSQL commits its INSERT, then sleeps: a statement that has committed before it replies.
const callSQL = "CALL chaos_write($1, $2, $3, $4)"

// Every statement gives up after this long: a stuck session shows up as an error.
const opTimeout = 20 * time.Second

var (
	stopping atomic.Bool
	outMu    sync.Mutex
	spaces   = regexp.MustCompile(`[\t\r\n]+`)
	sqlstate = regexp.MustCompile(`^[0-9A-Z]{5}$`)
)

func emit(fields ...any) {
	parts := make([]string, len(fields))
	for i, field := range fields {
		parts[i] = spaces.ReplaceAllString(fmt.Sprint(field), " ")
	}
	outMu.Lock()
	defer outMu.Unlock()
	_, _ = os.Stdout.WriteString(strings.Join(parts, "\t") + "\n")
}

// codeOf is the SQLSTATE when the server sent one, else conn (refused, reset, closed, timed out).
func codeOf(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && sqlstate.MatchString(pgErr.Code) {
		return pgErr.Code
	}
	return "conn"
}

// pickWrite chooses the next write: an autocommit INSERT (1 in 5), a CALL of chaos_write
// (1 in 10: it commits its INSERT, then sleeps pause ms), or a transaction paused 0-5 ms,
// one in twelve 200-800 ms (tx-long).
func pickWrite() (kind string, pause int) {
	draw := rand.Float64()
	switch {
	case draw < 0.2:
		return "auto", 0
	case draw < 0.3:
		return "call", 50 + rand.IntN(250)
	case rand.Float64() < 1.0/12:
		return "tx-long", 200 + rand.IntN(600)
	default:
		return "tx", rand.IntN(6)
	}
}

type stepError struct {
	step string
	err  error
}

func (e *stepError) Error() string { return e.err.Error() }

func exec(conn *pgx.Conn, step string, sql string, args ...any) (pgconn.CommandTag, error) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	tag, err := conn.Exec(ctx, sql, args...)
	if err != nil {
		return tag, &stepError{step, err}
	}
	return tag, nil
}

func connect(url string) (*pgx.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	return pgx.Connect(ctx, url)
}

// write runs one write; it returns whether it was acknowledged.
func write(conn *pgx.Conn, writer string, seq int, kind string, pause int) (bool, error) {
	note := kind + " go"
	if kind == "call" {
		tag, err := exec(conn, "call", callSQL, writer, seq, note, pause)
		if err != nil {
			return false, err
		}
		if tag.String() != "CALL" {
			return false, &stepError{"call", fmt.Errorf("CALL answered %s", tag.String())}
		}
		return true, nil
	}
	if kind == "auto" {
		tag, err := exec(conn, "insert", insertSQL, writer, seq, note)
		if err != nil {
			return false, err
		}
		if tag.RowsAffected() != 1 {
			return false, &stepError{"insert", fmt.Errorf("INSERT reported %d rows", tag.RowsAffected())}
		}
		return true, nil
	}
	if _, err := exec(conn, "begin", "BEGIN"); err != nil {
		return false, err
	}
	tag, err := exec(conn, "insert", insertSQL, writer, seq, note)
	if err != nil {
		return false, err
	}
	if tag.RowsAffected() != 1 {
		return false, &stepError{"insert", fmt.Errorf("INSERT reported %d rows", tag.RowsAffected())}
	}
	time.Sleep(time.Duration(pause) * time.Millisecond)
	commit, err := exec(conn, "commit", "COMMIT")
	if err != nil {
		return false, err
	}
	if commit.String() != "COMMIT" {
		// Postgres answers COMMIT of a failed transaction with ROLLBACK.
		emit("err", writer, seq, "commit", "not-committed", "COMMIT answered "+commit.String())
		return false, nil
	}
	return true, nil
}

func runConnection(url, writer string) {
	var conn *pgx.Conn
	seq := 0
	for !stopping.Load() {
		if conn == nil {
			c, err := connect(url)
			if err != nil {
				emit("err", writer, seq, "connect", codeOf(err), err)
				time.Sleep(time.Duration(100+rand.IntN(100)) * time.Millisecond)
				continue
			}
			conn = c
		}
		seq++
		kind, pause := pickWrite()
		acked, err := write(conn, writer, seq, kind, pause)
		if acked {
			emit("ack", writer, seq, kind)
			continue
		}
		if err == nil {
			continue
		}
		step := "unknown"
		var failed *stepError
		if errors.As(err, &failed) {
			step = failed.step
		}
		code := codeOf(err)
		emit("err", writer, seq, step, code, err)
		dead := conn.IsClosed() || code == "conn"
		if !dead {
			if _, err := exec(conn, "rollback", "ROLLBACK"); err != nil {
				dead = true
			}
		}
		if dead {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = conn.Close(ctx)
			cancel()
			conn = nil
		}
	}
	if conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = conn.Close(ctx)
		cancel()
	}
}

func main() {
	url := os.Getenv("DATABASE_URL")
	if url == "" {
		fmt.Fprintln(os.Stderr, "writer-go: DATABASE_URL is required")
		os.Exit(2)
	}
	prefix := os.Getenv("WRITER")
	if prefix == "" {
		prefix = "go"
	}
	connections := 4
	if raw := os.Getenv("CONNECTIONS"); raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil || n <= 0 {
			fmt.Fprintf(os.Stderr, "writer-go: CONNECTIONS must be a positive integer, got %q\n", raw)
			os.Exit(2)
		}
		connections = n
	}
	var wg sync.WaitGroup
	for i := range connections {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runConnection(url, fmt.Sprintf("%s-%d", prefix, i))
		}()
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
	stopping.Store(true)
	wg.Wait()
	emit("done", prefix)
}
