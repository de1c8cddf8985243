package sqldb

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNoNotify is returned by Listen on SQLite, which has no NOTIFY: poll.
var ErrNoNotify = errors.New("the database has no LISTEN/NOTIFY")

// Listen calls notify for each NOTIFY on channel (PostgreSQL), on a
// connection of its own, until ctx ends. It calls notify once more after
// each (re)connection, since a notification sent while it was away is
// lost; a lost connection is told to lost and retried every second.
func (db *DB) Listen(ctx context.Context, channel string, notify func(), lost func(error)) error {
	if db.Dialect != Postgres {
		return ErrNoNotify
	}
	for ctx.Err() == nil {
		err := db.listenOnce(ctx, channel, notify)
		if ctx.Err() != nil {
			break
		}
		lost(err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	return nil
}

func (db *DB) listenOnce(ctx context.Context, channel string, notify func()) error {
	conn, err := pgx.Connect(ctx, db.dsn)
	if err != nil {
		return fmt.Errorf("listen %s: %w", channel, err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{channel}.Sanitize()); err != nil {
		return fmt.Errorf("listen %s: %w", channel, err)
	}
	notify()
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return fmt.Errorf("listen %s: %w", channel, err)
		}
		notify()
	}
}
