// Package sqldbtest gives tests a fresh database, opened as the edge opens
// its own (sqldb.Open), on the engine TRUNKGATE_TEST_DB names: sqlite
// (the default) or postgres. For PostgreSQL the test binary starts its
// own server once — Debian's initdb and pg_ctl, in a temporary directory,
// on a loopback port — and gives each test a database of its own; a
// package that uses it stops the server in TestMain (Main).
package sqldbtest

import (
	"database/sql"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"trunkgate/internal/sqldb"
)

// Engine is the engine tests run their stores on.
func Engine() sqldb.Dialect {
	if os.Getenv("TRUNKGATE_TEST_DB") == "postgres" {
		return sqldb.Postgres
	}
	return sqldb.SQLite
}

// Open returns an empty database that is closed when the test ends.
func Open(t testing.TB) *sqldb.DB {
	t.Helper()
	dsn := filepath.Join(t.TempDir(), "test.db")
	if Engine() == sqldb.Postgres {
		dsn = PostgresURL(t)
	}
	db, err := sqldb.Open(dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// Main runs a package's tests and stops the PostgreSQL server if a test
// started it.
func Main(m *testing.M) {
	code := m.Run()
	Stop()
	os.Exit(code)
}

// Stop stops the PostgreSQL server if a test started it (for a TestMain
// of its own).
func Stop() { server.stop() }

// PostgresURL is a new, empty database on the test server, started on
// first use. It skips the test when PostgreSQL is not installed, unless
// TRUNKGATE_TEST_DB=postgres asks for it or TRUNKGATE_PG_REQUIRED is set
// (make test: a missing PostgreSQL must fail, not pass quietly).
func PostgresURL(t testing.TB) string {
	t.Helper()
	if err := server.start(); err != nil {
		if Engine() != sqldb.Postgres && os.Getenv("TRUNKGATE_PG_REQUIRED") == "" && strings.Contains(err.Error(), "not installed") {
			t.Skip(err)
		}
		t.Fatal(err)
	}
	name := fmt.Sprintf("t%d_%d", os.Getpid(), server.dbs.Add(1))
	if _, err := server.admin.Exec("CREATE DATABASE " + name); err != nil {
		t.Fatal(err)
	}
	return server.url(name)
}

// pgServer is the test binary's PostgreSQL.
type pgServer struct {
	once  sync.Once
	err   error
	dir   string
	port  int
	bin   string
	admin *sql.DB
	dbs   atomic.Int64
}

var server pgServer

func (s *pgServer) url(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.port, db)
}

// BinDir finds Debian's PostgreSQL programs.
func BinDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(matches) == 0 {
		return "", fmt.Errorf("PostgreSQL is not installed (apt-get install postgresql)")
	}
	return filepath.Dir(matches[len(matches)-1]), nil
}

// asPostgres runs a PostgreSQL program; as root it runs as the postgres
// user, since initdb and postgres refuse to run as root.
func asPostgres(bin string, args ...string) *exec.Cmd {
	if os.Geteuid() == 0 {
		return exec.Command("runuser", append([]string{"-u", "postgres", "--", bin}, args...)...)
	}
	return exec.Command(bin, args...)
}

func (s *pgServer) start() error {
	s.once.Do(func() { s.err = s.boot() })
	return s.err
}

func (s *pgServer) boot() error {
	bin, err := BinDir()
	if err != nil {
		return err
	}
	s.bin = bin
	if s.dir, err = os.MkdirTemp("", "trunkgate-pg-"); err != nil {
		return err
	}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return fmt.Errorf("PostgreSQL is not installed (no postgres user): %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(s.dir, uid, gid); err != nil {
			return err
		}
	}
	data := filepath.Join(s.dir, "data")
	if out, err := asPostgres(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8",
		"--no-sync").CombinedOutput(); err != nil {
		return fmt.Errorf("initdb: %v\n%s", err, out)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	s.port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -c unix_socket_directories=%s -c fsync=off "+
		"-c synchronous_commit=off -c full_page_writes=off -c max_connections=200 -c shared_buffers=32MB", s.port, s.dir)
	if out, err := asPostgres(filepath.Join(bin, "pg_ctl"), "-D", data, "-o", opts, "-l", filepath.Join(s.dir, "log"),
		"-w", "-t", "30", "start").CombinedOutput(); err != nil {
		log, _ := os.ReadFile(filepath.Join(s.dir, "log"))
		return fmt.Errorf("pg_ctl start: %v\n%s\n%s", err, out, log)
	}
	if s.admin, err = sql.Open("pgx", s.url("postgres")); err != nil {
		return err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err = s.admin.Ping(); err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *pgServer) stop() {
	if s.dir == "" {
		return
	}
	if s.admin != nil {
		s.admin.Close()
	}
	_ = asPostgres(filepath.Join(s.bin, "pg_ctl"), "-D", filepath.Join(s.dir, "data"), "-m", "immediate", "-w", "stop").Run()
	os.RemoveAll(s.dir)
}
