package pgtest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestServer checks the harness itself: TLS verified on IPv4 and IPv6 with
// the user's password, a plain TCP connection refused, and a fresh database
// that the user owns.
func TestServer(t *testing.T) {
	s := Start(t)
	db := s.NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, host := range []string{"127.0.0.1", "::1", "localhost"} {
		t.Run(host, func(t *testing.T) {
			c, err := pgx.Connect(ctx, s.DSN(host, db))
			if err != nil {
				t.Fatalf("connect: %v", err)
			}
			defer c.Close(ctx)
			var ssl bool
			if err := c.QueryRow(ctx, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl); err != nil || !ssl {
				t.Fatalf("connection over TLS: %v, %v", ssl, err)
			}
			if _, err := c.Exec(ctx, "CREATE TABLE x (a int)"); err != nil {
				t.Fatalf("the user cannot create a table in its database: %v", err)
			}
			if _, err := c.Exec(ctx, "DROP TABLE x"); err != nil {
				t.Fatal(err)
			}
			plain := strings.Replace(s.DSN(host, db), "sslmode=verify-full", "sslmode=disable", 1)
			if c, err := pgx.Connect(ctx, plain); err == nil {
				c.Close(ctx)
				t.Fatal("a connection without TLS was accepted")
			}
		})
	}
}
